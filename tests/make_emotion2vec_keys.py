"""Write tests/data/emotion2vec_keys.tsv: the state-dict keys and shapes of FunASR's Emotion2vec for
emotion2vec+ large.

FunASR's own module definitions (modelscope/FunASR, funasr/models/emotion2vec/, imported at run time from the
checkout named by FUNASR_PATH through benchmarks/emotion2vec_reference.py, never copied here) are built on the
meta device with the large model_conf (emo_pipeline.audio.emotion2vec.LARGE through
emotion2vec_reference.funasr_model_conf) and vocab_size 9, as FunASR's AutoModel builds the model for
`emotion2vec/emotion2vec_plus_large`, and its keys are written one a line, in make_hallo_keys.py's format:

    network<TAB>key<TAB>shape          shape: comma-separated, empty for a 0-dim tensor

sorted, under `#` header lines giving the commit, the config and the counts (the pre-training decoder and the
9-way head counted apart). Nothing is read from the hub's model.pt.

    FUNASR_PATH=/path/to/FunASR FUNASR_LIBS=/path/to/omegaconf-folder python tests/make_emotion2vec_keys.py
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import emotion2vec_reference as er  # noqa: E402
from reference_common import network_rows, write_key_list  # noqa: E402

from emo_pipeline.audio.emotion2vec import LARGE  # noqa: E402

OUTPUT = ROOT / "tests" / "data" / "emotion2vec_keys.tsv"
NETWORK = "emotion2vec_plus_large"
PARTS = (("pre-training decoder keys (modality_encoders.AUDIO.decoder.)", "modality_encoders.AUDIO.decoder."),
         ("9-way emotion head keys (proj.)", "proj."))


def main() -> None:
    module = er.import_funasr_emotion2vec(er.funasr_checkout())
    with torch.device("meta"):
        net = er.build_funasr_emotion2vec(module, LARGE)
    rows, line, state, _ = network_rows(NETWORK, net)
    summary = [line]
    for label, prefix in PARTS:
        part = [k for k in state if k.startswith(prefix)]
        summary.append(f"#   of which {label}: {len(part)} tensors, {sum(state[k].numel() for k in part):,} values")
    rows.sort()
    header = [
        "# FunASR's Emotion2vec state-dict keys for emotion2vec+ large: network<TAB>key<TAB>shape (shape empty for",
        "#   a 0-dim tensor), sorted.",
        f"# Built from the module definitions of {er.REPOSITORY} (funasr/models/emotion2vec/) at commit",
        f"#   {er.FUNASR_COMMIT}, on the meta device; NOT read from the hub's model.pt.",
        "# Emotion2vec(model_conf=<below>, vocab_size=9), as FunASR's AutoModel builds it for",
        "#   emotion2vec/emotion2vec_plus_large (vocab_size = the 9 labels of its tokens.txt).",
        "# model_conf, from emo_pipeline.audio.emotion2vec.LARGE: " + json.dumps(asdict(LARGE)),
        f"# Built with torch {torch.__version__.split('+')[0]}.",
        "# Generator: tests/make_emotion2vec_keys.py (imports FunASR's code from FUNASR_PATH at run time, through",
        "#   benchmarks/emotion2vec_reference.py).",
        *summary,
        f"# all: {len(rows)} tensors, {sum(state[k].numel() for k in state):,} values",
    ]
    write_key_list(OUTPUT, header, rows, summary, ROOT)


if __name__ == "__main__":
    main()
