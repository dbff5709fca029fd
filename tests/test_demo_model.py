"""The bundled demo model keeps its lip sync: on a held-out synthetic clip (train-demo's held-out
seed, never trained on) the mouth read from the generated pixels follows the loudness, and stops
following it when the same audio is shuffled."""

import json

import numpy as np
import pytest

from conftest import ROOT

DEMO = ROOT / "models" / "demo"


@pytest.mark.skipif(not (DEMO / "net.safetensors").is_file(), reason="the demo model is not bundled in this checkout")
def test_demo_model_mouth_follows_held_out_audio(tmp_path):
    from emo_pipeline.components import load_pipeline
    from emo_pipeline.training.demo import _generate_held_out
    from emo_pipeline.training.synthetic import make_dataset, mouth_opening

    (clip,) = make_dataset(tmp_path, 1, seed=1, seconds=4.0, size=64)  # train-demo --seed 0 holds out seed 1
    pipe = load_pipeline(DEMO / "net.safetensors")
    labels = json.loads(clip.with_suffix(".json").read_text())["mouth_open"]
    r = {}
    for shuffle in (False, True):
        video, meta, _ = _generate_held_out(pipe, clip, seed=0, shuffle=shuffle)
        assert video.shape == (100, 64, 64, 3)
        r[shuffle] = np.corrcoef(mouth_opening(video, meta["face_box"]).numpy(), labels)[0, 1]
    assert r[False] >= 0.7
    assert r[True] < 0.4
