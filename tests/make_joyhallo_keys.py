"""Write tests/data/joyhallo_keys.tsv: the state-dict keys and shapes of JoyHallo's net.pth.

JoyHallo's own module definitions (jdh-algo/JoyHallo at commit dbbe5b2, MIT, imported at run time from the
checkout named by JOYHALLO_PATH, never copied here) are built on the meta device at full size, as its
scripts/inference.py builds its `Net` (benchmarks/joyhallo_side_by_side.py, `build_joyhallo_net`: the SD1.5
UNet config, the denoising UNet with the `unet_additional_kwargs` of its configs/inference/inference.yaml, the
face locator and both projections). net.pth is the state dict of that `Net` (its script loads it strictly), so
its keys are `<network>.<key>`; they are written one a line, in make_hallo_keys.py's format:

    network<TAB>key<TAB>shape

sorted, under `#` header lines giving the commit and the counts. Nothing is read from JoyHallo's released
net.pth.

    JOYHALLO_PATH=/path/to/JoyHallo PYTHONPATH=/path/to/einops python tests/make_joyhallo_keys.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import diffusers
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import joyhallo_side_by_side as js  # noqa: E402
from reference_common import network_rows, quiet, write_key_list  # noqa: E402

from emo_pipeline.config import joyhallo_config  # noqa: E402

OUTPUT = ROOT / "tests" / "data" / "joyhallo_keys.tsv"
NETWORK_NAMES = ("reference_unet", "denoising_unet", "face_locator", "imageproj", "audioproj")
AUDIO = ".audio_modules."


def main() -> None:
    path = js.joyhallo_checkout()
    joy = js.import_joyhallo(path)
    settings = js.joyhallo_settings(path)
    with torch.device("meta"), quiet():
        net = js.build_joyhallo_net(joy, settings, joyhallo_config())

    rows: list[tuple[str, str, str]] = []
    summary: list[str] = []
    for name in NETWORK_NAMES:
        net_rows, line, state, _ = network_rows(name, getattr(net, name))
        rows += net_rows
        summary.append(line)
        if name == "denoising_unet":
            part = [k for k in state if AUDIO in k]
            values = sum(state[k].numel() for k in part)
            summary.append(f"#   of which audio-module keys (containing '{AUDIO}'): {len(part)} tensors, {values:,} values")
    rows.sort()
    total = sum(torch.Size([int(s) for s in shape.split(",") if s]).numel() for _, _, shape in rows)

    header = [
        "# JoyHallo's net.pth state-dict keys: network<TAB>key<TAB>shape (shape empty for a 0-dim tensor), sorted;",
        "#   the key in net.pth is <network>.<key>.",
        f"# Built from the module definitions of jdh-algo/JoyHallo at commit {js.JOYHALLO_COMMIT}, on",
        "# the meta device, as scripts/inference.py builds its Net (configs/inference/inference.yaml); NOT read from net.pth.",
        "# Keys are state_dict() keys: parameters and persistent buffers (the motion modules' pos_encoder.pe).",
        f"# Built with torch {torch.__version__.split('+')[0]} and diffusers {diffusers.__version__}.",
        "# Generator: tests/make_joyhallo_keys.py (imports JoyHallo's code from JOYHALLO_PATH at run time, through",
        "#   benchmarks/joyhallo_side_by_side.py's build_joyhallo_net).",
        "# Hallo's keys without the audio modules' attn2_1 and attn2_2 (one attention, attn2_0, shared by the",
        "#   full, face and lip branches).",
        *summary,
        f"# all: {len(rows)} tensors, {total:,} values",
    ]
    write_key_list(OUTPUT, header, rows, summary, ROOT)


if __name__ == "__main__":
    main()
