"""Write tests/data/vexpress_keys.tsv: the state-dict keys and shapes of V-Express's four trained networks.

V-Express's own module definitions (tencent-ailab/V-Express at commit 6814f7d, imported at run time from the
checkout named by VEXPRESS_PATH, never copied here) are built on the meta device at full size, as its
inference.py builds them (benchmarks/vexpress_reference.py, `build_vexpress_networks`: the SD1.5 UNet config,
the 3-D UNet from it with inference_v2.yaml's unet_additional_kwargs, the V-Kps guider and the audio
projection with the arguments its main passes). Each network is named as its hub file (reference_net.bin,
denoising_unet.bin, v_kps_guider.bin, audio_projection.bin hold flat state dicts that inference.py loads
straight into these networks), and its keys are written one a line, in make_hallo_keys.py's format:

    network<TAB>key<TAB>shape          shape: comma-separated, empty for a 0-dim tensor

sorted, under `#` header lines giving the commit, the configs and the counts. Nothing is read from
V-Express's released files.

The motion-module keys are the denoising UNet's keys containing ".motion_modules.": inference.py loads
denoising_unet.bin and then motion_module.bin into the same network, both with strict=False, so the file
lists the denoising UNet's full key set and counts the motion-module part (and the separate reference
attention, attn1_5/norm1_5, which SD1.5 has not) in the header.

    VEXPRESS_PATH=/path/to/V-Express python tests/make_vexpress_keys.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import diffusers
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import vexpress_reference as vr  # noqa: E402
from reference_common import SD15_UNET_CONFIG, network_rows, write_key_list  # noqa: E402

OUTPUT = ROOT / "tests" / "data" / "vexpress_keys.tsv"
NETWORK_NAMES = ("reference_net", "denoising_unet", "v_kps_guider", "audio_projection")
MOTION = ".motion_modules."
REFERENCE_ATTENTION = (".attn1_5.", ".norm1_5.")


def main() -> None:
    path = vr.vexpress_checkout()
    vx = vr.import_vexpress(path)
    settings = vr.vexpress_settings(path)
    with torch.device("meta"):
        nets = vr.build_vexpress_networks(vx, settings)

    rows: list[tuple[str, str, str]] = []
    summary: list[str] = []
    for name in NETWORK_NAMES:
        net_rows, line, state, _ = network_rows(name, nets[name])
        rows += net_rows
        summary.append(line)
        if name == "denoising_unet":
            for label, test in ((f"motion-module keys (containing '{MOTION}')", lambda k: MOTION in k),
                                ("reference-attention keys (attn1_5, norm1_5)",
                                 lambda k: any(p in k for p in REFERENCE_ATTENTION))):
                part = [k for k in state if test(k)]
                values = sum(state[k].numel() for k in part)
                summary.append(f"#   of which {label}: {len(part)} tensors, {values:,} values")
    rows.sort()
    total = sum(torch.Size([int(s) for s in shape.split(",") if s]).numel() for _, _, shape in rows)

    projection = ", ".join(f"{k}={v}" for k, v in vr.audio_projection_arguments().items())
    header = [
        "# V-Express's trained networks' state-dict keys: network<TAB>key<TAB>shape (shape empty for a 0-dim tensor),",
        "#   sorted; the network is named as its hub file (<network>.bin holds these keys, flat).",
        f"# Built from the module definitions of {vr.REPOSITORY} at commit {vr.VEXPRESS_COMMIT}, on",
        "# the meta device, as inference.py builds them; NOT read from its .bin files.",
        "# Keys are state_dict() keys: parameters and persistent buffers (the motion modules' pos_encoder.pe).",
        f"# Built with torch {torch.__version__.split('+')[0]} and diffusers {diffusers.__version__}.",
        "# Generator: tests/make_vexpress_keys.py (imports V-Express's code from VEXPRESS_PATH at run time, through",
        "#   benchmarks/vexpress_reference.py's build_vexpress_networks).",
        "# reference_net: modules.UNet2DConditionModel.from_config(<config>), <config> being the SD1.5 "
        "unet/config.json: " + json.dumps(SD15_UNET_CONFIG),
        "# denoising_unet: modules.UNet3DConditionModel.from_config_2d(<same config>, unet_additional_kwargs=",
        "#   <inference_v2.yaml's>): " + json.dumps(settings["unet_additional_kwargs"]),
        "# v_kps_guider: modules.VKpsGuider(320, block_out_channels=(16, 32, 96, 256))",
        f"# audio_projection: modules.AudioProjection({projection})",
        *summary,
        f"# all: {len(rows)} tensors, {total:,} values",
    ]
    write_key_list(OUTPUT, header, rows, summary, ROOT)


if __name__ == "__main__":
    main()
