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
    from emo_pipeline.training.demo import generate_held_out
    from emo_pipeline.training.synthetic import head_motion, make_dataset, mouth_opening

    (clip,) = make_dataset(tmp_path, 1, seed=1, seconds=4.0, size=64)  # train-demo --seed 0 holds out seed 1
    pipe = load_pipeline(DEMO / "net.safetensors")
    labels = json.loads(clip.with_suffix(".json").read_text())["mouth_open"]
    r, videos = {}, {}
    for shuffle in (False, True):
        video, meta, _ = generate_held_out(pipe, clip, seed=0, shuffle=shuffle)
        assert video.shape == (100, 64, 64, 3)
        r[shuffle] = np.corrcoef(mouth_opening(video, meta["face_box"]).numpy(), labels)[0, 1]
        videos[shuffle] = video
    assert r[False] >= 0.7
    assert r[True] < 0.4
    still = head_motion(videos[False], meta["face_box"])  # head speed unset: 0
    fast = head_motion(generate_held_out(pipe, clip, seed=0, head_speed=0.05)[0], meta["face_box"])
    assert fast > 1.3 * still


def _photograph(name: str = "astronaut"):
    import torch
    from skimage import data

    image = getattr(data, name)()
    image = np.stack([image] * 3, -1) if image.ndim == 2 else image
    return torch.from_numpy(image[..., :3].copy()).float() / 255


def test_photographs_are_told_from_the_demo_s_drawn_faces():
    import torch

    from emo_pipeline.portrait import looks_like_photograph
    from emo_pipeline.training.synthetic import draw_face, random_look

    for seed in range(8):
        look = random_look(torch.Generator().manual_seed(seed))
        for size in (64, 256):
            assert not looks_like_photograph(draw_face(size, look, 0.4, 0.1, 0.0)), (seed, size)
    for name in ("astronaut", "coffee", "chelsea", "camera"):
        assert looks_like_photograph(_photograph(name)), name
    assert looks_like_photograph(_photograph()[20:240, 140:360])  # the astronaut's face, cropped


def test_the_demo_model_says_before_rendering_that_it_cannot_animate_a_photograph(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    from test_batch import write_wav

    photo = tmp_path / "photo.png"
    Image.fromarray((_photograph().numpy() * 255).astype(np.uint8)).save(photo)
    audio = write_wav(tmp_path / "a.wav", 0.2)

    def generate(*extra: str) -> str:
        run = subprocess.run([sys.executable, "-m", "emo_pipeline", "generate", "--audio", str(audio), "--steps", "1",
                              "--out", str(tmp_path / "v.mp4"), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=1800)
        assert run.returncode == 0, run.stdout
        return run.stdout

    out = generate("--image", str(photo))
    lines = out.splitlines()
    warned = [i for i, l in enumerate(lines) if "looks like a photograph" in l]
    assert len(warned) == 1 and "python -m emo_pipeline download hallo" in lines[warned[0]]
    assert warned[0] < next(i for i, l in enumerate(lines) if l.startswith("Generating"))  # before the render
    assert "looks like a photograph" not in generate()  # the built-in drawn face: no warning
