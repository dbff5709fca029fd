"""Write tests/data/hallo2_sr_keys.tsv: the state-dict keys and shapes of Hallo2's video super-resolution
networks, hallo2/net_g.pth's `params_ema` (temporal CodeFormer) and realesrgan/RealESRGAN_x2plus.pth's
`params_ema` (RRDBNet).

Hallo2's own module definitions (fudan-generative-vision/hallo2, basicsr/archs/codeformer_arch.py,
vqgan_arch.py, rrdbnet_arch.py; S-Lab License 1.0 / Apache-2.0, imported at run time from the checkout
named by HALLO2_PATH through benchmarks/hallo2_sr_side_by_side.py's stand-ins, never copied here) are
built on the meta device at full size, as scripts/video_sr.py builds them. Rows:

    network<TAB>key<TAB>shape          network: codeformer (net_g.pth) or realesrgan (RealESRGAN_x2plus.pth)
                                       shape: comma-separated

sorted, under `#` header lines giving the commit and the counts. Nothing is read from the released files.

    HALLO2_PATH=/tmp/hallo2 python tests/make_hallo2_sr_keys.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import hallo2_sr_side_by_side as sr  # noqa: E402
from reference_common import network_rows, write_key_list  # noqa: E402

OUTPUT = ROOT / "tests" / "data" / "hallo2_sr_keys.tsv"


def main() -> None:
    codeformer_arch, rrdbnet_arch = sr.import_hallo2_sr(sr.hallo2_checkout())
    with torch.device("meta"):
        nets = {"codeformer": sr.build_hallo2_codeformer(codeformer_arch), "realesrgan": sr.build_hallo2_rrdbnet(rrdbnet_arch)}
    rows: list[tuple[str, str, str]] = []
    summary: list[str] = []
    for name, net in nets.items():
        net_rows, line, state, _ = network_rows(name, net)
        rows += net_rows
        summary.append(line)
        if name == "codeformer":
            temporal = [k for k in state if ".temp_" in k]
            values = sum(state[k].numel() for k in temporal)
            summary.append(f"#   of which temporal keys (containing '.temp_'): {len(temporal)} tensors, {values:,} values")
    rows.sort()
    total = sum(torch.Size([int(s) for s in shape.split(",") if s]).numel() for _, _, shape in rows)
    header = [
        "# Hallo2's video super-resolution state-dict keys: network<TAB>key<TAB>shape, sorted.",
        "#   codeformer: hallo2/net_g.pth['params_ema']; realesrgan: realesrgan/RealESRGAN_x2plus.pth['params_ema'].",
        f"# Built from the module definitions of fudan-generative-vision/hallo2 at commit {sr.HALLO2_COMMIT}, on",
        "# the meta device, as scripts/video_sr.py builds them (CodeFormer(dim_embd=512, codebook_size=1024, n_head=8,",
        "#   n_layers=9, connect_list=['32','64','128','256']); RRDBNet(3, 3, num_feat=64, num_block=23, num_grow_ch=32,",
        "#   scale=2)); NOT read from the released files.",
        f"# Built with torch {torch.__version__.split('+')[0]}.",
        "# Generator: tests/make_hallo2_sr_keys.py (imports Hallo2's code from HALLO2_PATH at run time).",
        *summary,
        f"# all: {len(rows)} tensors, {total:,} values",
    ]
    write_key_list(OUTPUT, header, rows, summary, ROOT)


if __name__ == "__main__":
    main()
