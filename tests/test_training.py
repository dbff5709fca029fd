"""Training: the synthetic set, the dataset on real MP4 files, the three stages, resuming, and two
processes under accelerate (gloo on the CPU) ending with the same weights."""

import hashlib
import json
import math
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from emo_pipeline.config import tiny_config, tiny_emo_config
from emo_pipeline.io.media import read_video_info
from emo_pipeline.tiny import tiny_components
from emo_pipeline.training.dataset import TalkingFaceDataset
from emo_pipeline.training.stages import TrainingModule, trainable_names
from emo_pipeline.training.synthetic import make_clip, make_dataset, mouth_opening


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    make_dataset(folder, 2, seed=5, seconds=1.5, size=64)
    return folder


def test_synthetic_clip_is_a_real_mp4_whose_mouth_follows_the_sound(tmp_path):
    import av

    labels = make_clip(tmp_path / "c.mp4", seed=1, seconds=3.0)
    info = read_video_info(tmp_path / "c.mp4")
    assert info["frame_count"] == 75 and abs(info["audio_duration"] - 3.0) < 1e-3
    with av.open(str(tmp_path / "c.mp4")) as c:
        frames = torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]) / 255
    r = np.corrcoef(mouth_opening(frames, labels.face_box).numpy(), labels.mouth_open)[0, 1]
    assert r > 0.9  # the pixels show the label
    again = make_clip(tmp_path / "d.mp4", seed=1, seconds=3.0)
    assert again == labels  # deterministic from the seed
    turning = make_clip(tmp_path / "e.mp4", seed=2, seconds=3.0, head_speed=0.03)
    assert 0.025 < max(abs(s) for s in turning.speed) <= 0.0301  # the requested peak head speed


def test_dataset_reads_mp4_with_audio(clips):
    _, _, encoder = tiny_components()
    config = tiny_config()
    ds = TalkingFaceDataset(clips, config, encoder, stage=2)
    sample = ds[3]
    n, f = config.motion_frames, config.frames_per_clip
    assert sample["target"].shape == (f, 3, 64, 64) and sample["motion"].shape == (n, 3, 64, 64)
    assert sample["audio"].shape == (f, 5, config.audio_feature_layers, config.audio_feature_dim)
    assert -1 <= sample["target"].min() and sample["target"].max() <= 1
    assert len(ds) == 2 * (38 - n - f + 1)  # 1.5 s at 25 fps = 38 frames per clip
    labels = json.loads((clips / "clip_00000.json").read_text())
    torch.testing.assert_close(sample["speed"], torch.tensor(labels["speed"][3 + n: 3 + n + f]))
    # motion frames are the frames right before the clip
    torch.testing.assert_close(ds[4]["motion"][-1], sample["target"][0])


@pytest.mark.parametrize("config", [tiny_config, tiny_emo_config], ids=["hallo-shaped", "emo"])
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_each_stage_reduces_the_loss_on_a_fixed_batch(clips, config, stage):
    net, vae, encoder = tiny_components(config())
    ds = TalkingFaceDataset(clips, net.config, encoder, stage)
    batch = torch.utils.data.default_collate([ds[0], ds[9]])
    module = TrainingModule(net, vae, stage)
    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trained == set(trainable_names(net, stage))
    if stage == 3:
        assert not any(".audio_modules." in n for n in trained) and all(".motion_modules." in n or "speed" in n
                                                                          for n in trained)
    frozen = {n: p.detach().clone() for n, p in net.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(5):
        loss = module(batch, torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in net.named_parameters() if n in frozen)


def test_trainer_saves_and_resumes(clips, tmp_path):
    from emo_pipeline.io.loading import load_net
    from emo_pipeline.training.trainer import TrainSettings, train

    settings = TrainSettings(data=str(clips), out=str(tmp_path / "run"), stage=1, steps=2, lr=1e-3, save_every=1)
    path, net = train(settings, log=lambda *_: None)
    assert json.loads((tmp_path / "run" / "resume.json").read_text())["step"] == 2
    resumed_path, resumed = train(TrainSettings(**{**settings.__dict__, "steps": 4}), log=lambda *_: None)
    assert json.loads((tmp_path / "run" / "resume.json").read_text())["step"] == 4
    loaded = load_net(resumed_path)
    changed = [not torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values())]
    assert any(changed)


def test_two_processes_end_with_the_same_weights(clips, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), str(ROOT / "tests" / "distributed_train.py"), str(clips), str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [(tmp_path / f"rank{r}.sha256").read_text().split() for r in (0, 1)]
    assert ranks[0][0] == ranks[1][0] == "2"  # a real two-process group
    assert ranks[0][1] == ranks[1][1]
    net, _, _ = tiny_components()
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode() + tensor.float().contiguous().numpy().tobytes())
    assert digest.hexdigest() != ranks[0][1]  # and training changed them


def test_emo_training_shows_the_first_clip_zero_motion_maps(clips):
    """EMO starts each video with zero motion maps, so a share of training samples gets them too:
    those samples' loss cannot depend on the motion frames' pixels."""
    net, vae, encoder = tiny_components(tiny_emo_config())
    batch = torch.utils.data.default_collate([TalkingFaceDataset(clips, net.config, encoder, 2)[0]])
    other = dict(batch, motion=torch.rand_like(batch["motion"]) * 2 - 1)

    def loss(module, b):
        with torch.no_grad():
            return module(b, torch.Generator().manual_seed(0)).item()

    always = TrainingModule(net, vae, 2, first_clip_ratio=1.0)
    assert loss(always, batch) == loss(always, other)
    never = TrainingModule(net, vae, 2, first_clip_ratio=0.0)
    assert loss(never, batch) != loss(never, other)


@pytest.mark.parametrize("skin", [(0.96, 0.80, 0.68), (0.72, 0.52, 0.38), (0.36, 0.24, 0.17)])
@pytest.mark.parametrize("background", [(0.85, 0.10, 0.45), (0.20, 0.60, 0.90)], ids=["magenta", "blue"])
def test_mouth_measure_holds_for_every_skin_and_a_lip_coloured_background(skin, background):
    from emo_pipeline.training.synthetic import Look, draw_face

    look = Look(skin=skin, hair=(0.55, 0.15, 0.08), background=background, background2=background, eye_gap=0.2,
                face_width=0.47, face_height=0.63, center_x=0.0, center_y=0.03)
    openings = torch.linspace(0, 1, 11)
    frames = torch.stack([draw_face(64, look, float(o), yaw=0.3 * math.sin(3 * float(o)), blink=0.0)
                          for o in openings])
    box = [0.2, 0.15, 0.8, 0.86]
    measured = mouth_opening(frames, box)
    assert np.corrcoef(measured.numpy(), openings.numpy())[0, 1] > 0.95
    blurred = torch.nn.functional.avg_pool2d(frames.permute(0, 3, 1, 2), 3, 1, 1).permute(0, 2, 3, 1)
    assert np.corrcoef(mouth_opening(blurred, box).numpy(), openings.numpy())[0, 1] > 0.9


def test_head_motion_measure_tracks_the_yaw_speed_labels(tmp_path):
    from emo_pipeline.training.dataset import read_frames
    from emo_pipeline.training.synthetic import head_motion

    measured, labelled = [], []
    for i, speed in enumerate((0.0, 0.01, 0.02, 0.03, 0.04, 0.05)):
        labels = make_clip(tmp_path / f"c{i}.mp4", seed=10 + i, seconds=2.0, head_speed=speed)
        frames, _ = read_frames(tmp_path / f"c{i}.mp4", 64)
        measured.append(head_motion(frames.float() / 255, labels.face_box))
        labelled.append(float(np.abs(labels.speed).mean()))
    assert np.corrcoef(measured, labelled)[0, 1] > 0.9
    assert measured[0] < 0.05  # a still head measures as still
