"""The lip-sync scoring means something: a tiny SyncNet trained by our own code (emo_pipeline.training.syncnet;
tests/make_tiny_syncnet.py wrote tests/data/tiny_syncnet.safetensors from synthetic clips of seeds 1000..1023),
scored by metrics.sync_score exactly as syncnet_python's evaluate() scores, on held-out synthetic drawn-face
clips made here (seeds 9000, 9001, 9002, 4 s each, never trained on):
- the sound moved by k frames against the picture is found at offset exactly k, for k in -6, -3, 0, 3, 6, on
  every clip (the shipped net, tried on held-out clips 9000..9007, found k exactly for k in 0, ±1, ±3, ±6, ±9,
  ±12 on all eight);
- in-sync sound gets more than twice the Sync-C, and a lower Sync-D, of another clip's sound or of the clip's own
  sound shuffled in 0.2-s blocks (on eight held-out clips the smallest ratio was 2.2);
- the training objective falls over a handful of steps on two clips.
Crops are the clips' whole frames (64² → 224²), as in training. The tiny net has only seen drawn faces whose
mouths open with loudness: its scores mean nothing for real videos. No wall clock is read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from emo_pipeline.metrics.sync_score import SAMPLES_PER_FRAME, score
from emo_pipeline.metrics.syncnet import SyncNet
from emo_pipeline.training.synthetic import make_clip
from emo_pipeline.training.syncnet import (load_sync_clip, load_trained_syncnet, metadata_of, mfcc_of,
                                           offset_loss, save_syncnet, shift_samples, train_syncnet)

WEIGHTS = Path(__file__).parent / "data" / "tiny_syncnet.safetensors"
HELD_OUT = (9000, 9001, 9002)  # training used 1000..1023
SHIFTS = (-6, -3, 0, 3, 6)
BLOCK = 5 * SAMPLES_PER_FRAME  # 0.2 s at 16 kHz
SECONDS = 4.0  # 95 scored windows a clip (at 3 s, another clip's sound scored up to 0.8 of in-sync)
BATCH = 100  # windows per forward pass; eval-mode BatchNorm makes the scores independent of it


@pytest.fixture(scope="module")
def network() -> SyncNet:
    return load_trained_syncnet(WEIGHTS)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("held_out")
    out = []
    for seed in HELD_OUT:
        make_clip(folder / f"clip_{seed}.mp4", seed, seconds=SECONDS)
        out.append(load_sync_clip(folder / f"clip_{seed}.mp4"))
    return out


@pytest.fixture(scope="module")
def scores(network, clips) -> dict:
    """score() of each held-out clip with its sound shifted by each k, replaced by the next clip's sound, and
    shuffled in 0.2-s blocks (computed once: the lip stream at 224² is most of this file's time)."""
    gen = np.random.default_rng(0)
    out = {}
    for i, clip in enumerate(clips):
        for k in SHIFTS:
            out[clip.path.stem, k] = _score(network, clip, shift_samples(clip.samples, k))
        other = clips[(i + 1) % len(clips)].samples
        other = np.concatenate([other, np.zeros(max(0, len(clip.samples) - len(other)), other.dtype)])
        out[clip.path.stem, "other"] = _score(network, clip, other[:len(clip.samples)])
        blocks = [clip.samples[j:j + BLOCK] for j in range(0, len(clip.samples), BLOCK)]
        shuffled = np.concatenate([blocks[j] for j in gen.permutation(len(blocks))])
        out[clip.path.stem, "shuffled"] = _score(network, clip, shuffled)
    return out


def _score(network, clip, samples):
    return score(network, clip.crops, mfcc_of(samples), len(samples), batch_size=BATCH)


def test_the_shipped_net_is_tiny_and_held_out_seeds_were_not_trained_on():
    meta = json.loads(metadata_of(WEIGHTS)["training"])
    assert WEIGHTS.stat().st_size < 1_000_000
    first, last = (int(s) for s in meta["clip_seeds"].split(".."))
    assert not set(HELD_OUT) & set(range(first, last + 1))


def test_shift_samples_moves_the_sound_by_whole_frames():
    samples = np.arange(1, 3201, dtype=np.int16)  # five frames
    early, late = shift_samples(samples, 2), shift_samples(samples, -2)
    assert len(early) == len(late) == len(samples)
    assert np.array_equal(early[:1920], samples[1280:]) and not early[1920:].any()
    assert np.array_equal(late[1280:], samples[:1920]) and not late[:1280].any()
    assert not shift_samples(samples, 9).any() and np.array_equal(shift_samples(samples, 0), samples)


def test_training_objective_falls_in_a_few_steps(clips):
    """offset_loss, minimised on a fixed batch of four windows from two clips: it falls within six steps.
    (Placed before the scoring tests: right after their large forward passes, the first training steps run
    several times slower while memory is handed back and forth.)
    train_syncnet itself runs, returns an eval-mode net, and round-trips through save/load."""
    two = clips[:2]
    torch.manual_seed(0)
    net = SyncNet(embedding=16, width=1 / 32)
    starts = [torch.tensor([10, 50]), torch.tensor([30, 60])]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        loss, _ = offset_loss(net, two, starts, max_shift=15)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.85 * losses[0], losses

    result = train_syncnet(two, steps=2, width=1 / 32, embedding=16, seed=1, clips_per_step=2, windows_per_clip=1)
    assert not result.network.training and len(result.losses) == 2 and np.isfinite(result.losses).all()


def test_offset_found_for_shifted_sound(scores, clips):
    """Sound k frames early (k > 0) or late (k < 0), silence padding: the offset evaluate() reports is k
    exactly, on every held-out clip."""
    found = {(clip.path.stem, k): scores[clip.path.stem, k].offset for clip in clips for k in SHIFTS}
    assert found == {(clip.path.stem, k): k for clip in clips for k in SHIFTS}


def test_in_sync_sound_scores_higher_than_other_or_shuffled_sound(scores, clips):
    """Sync-C of the clip's own sound is more than twice that of another clip's sound or of its own shuffled
    in 0.2-s blocks, and its Sync-D is lower."""
    for clip in clips:
        in_sync, other, shuffled = (scores[clip.path.stem, key] for key in (0, "other", "shuffled"))
        assert in_sync.sync_c > 2 * max(other.sync_c, shuffled.sync_c), (
            clip.path.stem, in_sync.sync_c, other.sync_c, shuffled.sync_c)
        assert in_sync.sync_d < min(other.sync_d, shuffled.sync_d)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = SyncNet(embedding=8, width=1 / 32).eval()
    path = save_syncnet(net, tmp_path / "net.safetensors", {"note": "x"})
    back = load_trained_syncnet(path)
    assert back.width == net.width and back.netfclip[-1].out_features == 8
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), back.state_dict().values()))
    assert metadata_of(path)["note"] == "x"
    save_file({"a": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not written by save_syncnet"):
        load_trained_syncnet(tmp_path / "other.safetensors")


def test_a_narrow_syncnet_keeps_the_layers_keys_and_input_geometry():
    with torch.device("meta"):
        full = {k: tuple(v.shape) for k, v in SyncNet().state_dict().items()}
    narrow = SyncNet(embedding=64, width=1 / 16).eval()
    shapes = {k: tuple(v.shape) for k, v in narrow.state_dict().items()}
    assert list(shapes) == list(full)
    assert shapes["netcnnlip.0.weight"] == (6, 3, 5, 7, 7) and full["netcnnlip.0.weight"] == (96, 3, 5, 7, 7)
    assert shapes["netfcaud.3.weight"] == (64, 32) and full["netfcaud.3.weight"] == (1024, 512)
    with torch.no_grad():
        assert narrow.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 64)
        assert narrow.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 64)
    with pytest.raises(ValueError, match="width must be more than 0"):
        SyncNet(width=0)
