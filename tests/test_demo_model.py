"""The bundled demo model keeps its lip sync and its speed layers: on a held-out synthetic clip
(train-demo's held-out seed, never trained on) the mouth read from the generated pixels follows the
loudness, and stops following it when the same audio is shuffled; asking for a faster head turn
moves the head more (the same seed, so the same starting noise)."""

import json

import numpy as np
import pytest

from conftest import ROOT

DEMO = ROOT / "models" / "demo"


@pytest.mark.skipif(not (DEMO / "net.safetensors").is_file(), reason="the demo model is not bundled in this checkout")
def test_demo_model_mouth_follows_held_out_audio_and_turns_faster_when_asked(tmp_path):
    from emo_pipeline.components import load_pipeline
    from emo_pipeline.training.demo import _generate_held_out
    from emo_pipeline.training.synthetic import head_motion, make_dataset, mouth_opening

    (clip,) = make_dataset(tmp_path, 1, seed=1, seconds=4.0, size=64)  # train-demo --seed 0 holds out seed 1
    pipe = load_pipeline(DEMO / "net.safetensors")
    labels = json.loads(clip.with_suffix(".json").read_text())["mouth_open"]
    r, videos = {}, {}
    for shuffle in (False, True):
        video, meta, _ = _generate_held_out(pipe, clip, seed=0, shuffle=shuffle)
        assert video.shape == (100, 64, 64, 3)
        r[shuffle] = np.corrcoef(mouth_opening(video, meta["face_box"]).numpy(), labels)[0, 1]
        videos[shuffle] = video
    assert r[False] >= 0.7
    assert r[True] < 0.4
    still = head_motion(videos[False], meta["face_box"])  # head speed unset: 0
    fast = head_motion(_generate_held_out(pipe, clip, seed=0, head_speed=0.05)[0], meta["face_box"])
    assert fast > 1.3 * still
