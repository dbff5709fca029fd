"""Write tests/data/hallo_keys.tsv: the state-dict keys and shapes of Hallo's net.pth.

Hallo's own module definitions (fudan-generative-vision/hallo at commit 8fd7c57, MIT, imported at
run time from the checkout named by HALLO_PATH, never copied here) are built on the meta device at
full size, as its scripts/inference.py builds its `Net` (benchmarks/hallo_side_by_side.py,
`build_hallo_net`: the SD1.5 UNet config, the denoising UNet with the `unet_additional_kwargs` of
configs/inference/default.yaml, the face locator and both projections). net.pth is the state dict
of that `Net`, so its keys are `<network>.<key>`; they are written one a line:

    network<TAB>key<TAB>shape          network: reference_unet, denoising_unet, face_locator,
                                                imageproj or audioproj
                                       shape: comma-separated, empty for a 0-dim tensor

sorted, under `#` header lines giving the commit and the counts. Nothing is read from Hallo's
released net.pth (its inference loads that file strictly into exactly this module set).

    HALLO_PATH=/path/to/hallo PYTHONPATH=/path/to/einops python tests/make_hallo_keys.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import diffusers
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import hallo_side_by_side as hs  # noqa: E402
from reference_common import network_rows, quiet, write_key_list  # noqa: E402

from emo_pipeline.config import hallo_config  # noqa: E402

OUTPUT = ROOT / "tests" / "data" / "hallo_keys.tsv"
HALLO_COMMIT = "8fd7c572a3d43c2a9c1a5473219ce4fc1b6e3ed2"  # the commit every Hallo comparison of this project uses
NETWORK_NAMES = ("reference_unet", "denoising_unet", "face_locator", "imageproj", "audioproj")
MOTION = ".motion_modules."
AUDIO = ".audio_modules."


def main() -> None:
    path = hs.hallo_checkout()
    hallo = hs.import_hallo(path)
    settings = hs.hallo_inference_settings(path)
    with torch.device("meta"), quiet():
        net = hs.build_hallo_net(hallo, settings, hallo_config())

    rows: list[tuple[str, str, str]] = []
    summary: list[str] = []
    for name in NETWORK_NAMES:
        net_rows, line, state, buffers = network_rows(name, getattr(net, name))
        rows += net_rows
        summary.append(line)
        if name == "denoising_unet":
            for label, marker in (("motion-module", MOTION), ("audio-module", AUDIO)):
                part = [k for k in state if marker in k]
                values = sum(state[k].numel() for k in part)
                summary.append(f"#   of which {label} keys (containing '{marker}'): {len(part)} tensors, {values:,} values")
    rows.sort()
    total = sum(torch.Size([int(s) for s in shape.split(",") if s]).numel() for _, _, shape in rows)

    header = [
        "# Hallo's net.pth state-dict keys: network<TAB>key<TAB>shape (shape empty for a 0-dim tensor), sorted;",
        "#   the key in net.pth is <network>.<key>.",
        f"# Built from the module definitions of fudan-generative-vision/hallo at commit {HALLO_COMMIT}, on",
        "# the meta device, as scripts/inference.py builds its Net (configs/inference/default.yaml); NOT read from net.pth.",
        "# Keys are state_dict() keys: parameters and persistent buffers (the motion modules' pos_encoder.pe).",
        f"# Built with torch {torch.__version__.split('+')[0]} and diffusers {diffusers.__version__} (module names"
        " such as attention's to_out.0 come from diffusers).",
        "# Generator: tests/make_hallo_keys.py (imports Hallo's code from HALLO_PATH at run time, through",
        "#   benchmarks/hallo_side_by_side.py's build_hallo_net).",
        "# denoising_unet.down_blocks.3.motion_modules.* and up_blocks.0.motion_modules.* exist but Hallo never runs",
        "#   them (its training-mode, gradient-checkpointing path skips the 8x8 blocks' temporal modules).",
        *summary,
        f"# all: {len(rows)} tensors, {total:,} values",
    ]
    write_key_list(OUTPUT, header, rows, summary, ROOT)


if __name__ == "__main__":
    main()
