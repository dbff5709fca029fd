"""End-to-end generation on the tiny configuration: frame counts, determinism, motion frames."""

import math
from decimal import Decimal

import pytest
import torch

from conftest import speech_like
from emo_pipeline.audio.encoder import frame_count, normalize_speech
from emo_pipeline.models.frame_windows import frame_windows
from emo_pipeline.pipeline import EMOPipeline
from emo_pipeline.sampling.steps import Callbacks, GenerationCancelled, SamplingOptions


def expected_frames(num_samples: int, sample_rate: int, fps: str) -> int:
    # Independent of the engine's Fraction arithmetic: decimal seconds × fps, rounded up.
    return math.ceil(Decimal(num_samples) / Decimal(sample_rate) * Decimal(fps))


@pytest.mark.parametrize("seconds", [0.1, 0.16, 0.5])  # < one clip, exactly one clip (4 frames), 3 clips + 1
def test_one_frame_per_audio_frame(tiny_pipeline, tiny_portrait, seconds):
    wave = speech_like(seconds, 16000)
    audio = tiny_pipeline.encode_audio(wave, 16000)
    frames = tiny_pipeline.generate(tiny_portrait, audio, SamplingOptions(seed=3, steps=2))
    n = expected_frames(wave.shape[-1], 16000, "25")
    assert audio.num_frames == n
    assert frames.shape == (n, 64, 64, 3)
    assert frames.dtype == torch.float32 and 0 <= frames.min() and frames.max() <= 1


@pytest.mark.parametrize("samples,rate,fps", [(16000, 16000, "25"), (44100 * 3 + 7, 44100, "29.97"),
                                              (12345, 8000, "30"), (1, 16000, "25"), (640, 16000, "25")])
def test_frame_count_matches_independent_formula(samples, rate, fps):
    assert frame_count(samples, rate, float(fps)) == expected_frames(samples, rate, fps)


def test_same_seed_same_frames_and_seed_matters(tiny_pipeline, tiny_portrait):
    audio = tiny_pipeline.encode_audio(speech_like(0.3), 16000)
    a = tiny_pipeline.generate(tiny_portrait, audio, SamplingOptions(seed=7, steps=2))
    b = tiny_pipeline.generate(tiny_portrait, audio, SamplingOptions(seed=7, steps=2))
    c = tiny_pipeline.generate(tiny_portrait, audio, SamplingOptions(seed=8, steps=2))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


class RecordingPipeline(EMOPipeline):
    """Records what the VAE is asked to encode (portrait and motion frames)."""

    def encode_images(self, pixels):
        self.encoded.append(pixels.detach().clone())
        return super().encode_images(pixels)


def test_motion_frames_are_the_previous_clips_last_frames(tiny_pipeline, tiny_portrait):
    pipe = RecordingPipeline(tiny_pipeline.net, tiny_pipeline.vae, tiny_pipeline.audio_encoder)
    pipe.encoded = []
    audio = pipe.encode_audio(speech_like(0.5), 16000)  # 13 frames: clips of 4
    clips = list(pipe.iter_clips(tiny_portrait, audio, SamplingOptions(seed=1, steps=2)))
    assert [len(c) for c in clips] == [4, 4, 4, 1]
    n = pipe.config.motion_frames
    # encoded[0] is the portrait; encoded[k] (k >= 1) the motion frames of clip k.
    assert len(pipe.encoded) == 1 + 3
    for k in range(1, 4):
        expected = clips[k - 1][-n:].permute(0, 3, 1, 2) * 2 - 1
        torch.testing.assert_close(pipe.encoded[k], expected)


def test_motion_frames_carry_information_between_clips(tiny_pipeline, tiny_portrait):
    audio = tiny_pipeline.encode_audio(speech_like(0.32), 16000)  # 8 frames = 2 clips
    changed = type(audio)(**{**audio.__dict__, "features": audio.features.clone()})
    changed.features[:2] += 3.0  # only frames 0-1; clip 2's ±2 audio windows start at frame 2

    def run(a, motion_frames):
        return tiny_pipeline.generate(tiny_portrait, a, SamplingOptions(seed=5, steps=2, motion_frames=motion_frames))

    base, other = run(audio, 2), run(changed, 2)
    assert (base[:4] - other[:4]).abs().max() > 1e-4  # the change reaches clip 1
    assert (base[4:] - other[4:]).abs().max() > 1e-5  # and clip 2 only through its motion frames
    # Control: without motion frames clip 2 cannot know about clip 1.
    base0, other0 = run(audio, 0), run(changed, 0)
    assert torch.equal(base0[4:], other0[4:])


def test_audio_features_match_an_independent_computation(tiny_pipeline):
    """CNN features → linear interpolation (align_corners) to the frame count → transformer layers."""
    import numpy as np

    wave = speech_like(0.37)[0]
    audio = tiny_pipeline.encode_audio(wave, 16000)
    clip = tiny_pipeline.config.frames_per_clip
    n = expected_frames(wave.numel(), 16000, "25")
    padded = -(-n // clip) * clip
    w = wave.double().numpy()
    speech = torch.from_numpy((w - w.mean()) / np.sqrt(w.var() + 1e-7))
    speech = torch.cat([speech.float(), torch.zeros((padded - n) * 640)])
    model = tiny_pipeline.audio_encoder.model
    with torch.no_grad():
        cnn = model.feature_extractor(speech[None])[0].numpy()  # [C, T50]
        src = np.linspace(0, cnn.shape[1] - 1, padded)  # align_corners=True sample positions
        resampled = np.stack([np.interp(src, np.arange(cnn.shape[1]), row) for row in cnn], axis=1)
        hidden, _ = model.feature_projection(torch.from_numpy(resampled).float()[None])
        encoder = model.encoder  # post-norm wav2vec2-base layout: positional conv, LayerNorm, layers
        h = encoder.layer_norm(hidden + encoder.pos_conv_embed(hidden))
        layers = []
        for layer in encoder.layers:
            h = layer(h)
            h = h[0] if isinstance(h, tuple) else h
            layers.append(h)
    expected = torch.stack(layers, dim=2)[0]
    assert audio.features.shape == (padded, 2, 32)
    torch.testing.assert_close(audio.features, expected, atol=1e-4, rtol=1e-4)


def test_audio_windows_match_hallo_style_loop():
    x = torch.arange(7.0).view(1, 7, 1)
    windows = frame_windows(x, 2)[0, :, :, 0]
    for i in range(7):
        expected = [min(max(i + j, 0), 6) for j in range(-2, 3)]
        assert windows[i].tolist() == expected
    assert frame_windows(x, 2, 3, 5)[0, :, :, 0].tolist() == windows[3:5].tolist()


def test_progress_and_cancel(tiny_pipeline, tiny_portrait):
    audio = tiny_pipeline.encode_audio(speech_like(0.3), 16000)  # 8 frames, 2 clips
    seen, previews = [], []
    cb = Callbacks(on_step=seen.append, on_preview=previews.append)
    tiny_pipeline.generate(tiny_portrait, audio, SamplingOptions(steps=3, callbacks=cb))
    assert [s.step for s in seen] == list(range(1, 7))
    assert {s.total_steps for s in seen} == {6} and [s.clip for s in seen] == [0, 0, 0, 1, 1, 1]
    assert previews[0].shape == (1, 4, 4, 8, 8)
    calls = []
    cancel = Callbacks(is_cancelled=lambda: len(calls) >= 2, on_step=calls.append)
    with pytest.raises(GenerationCancelled):
        tiny_pipeline.generate(tiny_portrait, audio, SamplingOptions(steps=3, callbacks=cancel))
    assert len(calls) == 2


@pytest.mark.parametrize("scheduler", ["ddim", "dpmpp_2m", "euler", "unipc"])
def test_schedulers_give_finite_frames(tiny_pipeline, tiny_portrait, scheduler):
    audio = tiny_pipeline.encode_audio(speech_like(0.1), 16000)
    frames = tiny_pipeline.generate(tiny_portrait, audio, SamplingOptions(steps=3, scheduler=scheduler))
    assert torch.isfinite(frames).all() and frames.shape[0] == 3


def test_clip_length_change_reencodes_audio(tiny_pipeline, tiny_portrait):
    audio = tiny_pipeline.encode_audio(speech_like(0.3), 16000)
    frames = tiny_pipeline.generate(tiny_portrait, audio, SamplingOptions(steps=2, frames_per_clip=3))
    assert frames.shape[0] == audio.num_frames == 8


def test_long_audio_is_encoded_in_segments_with_one_frame_each(tiny_pipeline, monkeypatch):
    import emo_pipeline.pipeline as pipeline_module

    wave = speech_like(1.0)
    whole = tiny_pipeline.encode_audio(wave, 16000)
    monkeypatch.setattr(pipeline_module, "AUDIO_SEGMENT_SECONDS", 0.32)  # 8 frames: 2 clips per segment
    calls = []
    encoder = tiny_pipeline.audio_encoder
    monkeypatch.setattr(tiny_pipeline, "audio_encoder",
                        lambda speech, frames: calls.append((speech.numel(), frames)) or encoder(speech, frames))
    parts = tiny_pipeline.encode_audio(wave, 16000)
    assert parts.num_frames == whole.num_frames == 25 and parts.features.shape == whole.features.shape == (28, 2, 32)
    assert calls == [(5120, 8), (5120, 8), (5120, 8), (2560, 4)]  # 640 samples per frame at 25 fps
    speech = normalize_speech(wave[0])
    torch.testing.assert_close(parts.features[8:16], encoder(speech[5120:10240], 8))  # segment 2 on its own samples


def test_hallo2_masks_motion_frame_pixels_outside_the_face(tiny_pipeline):
    from emo_pipeline.config import tiny_config

    net = type(tiny_pipeline.net)(tiny_config(motion_frame_mask_rate=0.5))
    net.load_state_dict(tiny_pipeline.net.state_dict())
    pipe = RecordingPipeline(net, tiny_pipeline.vae, tiny_pipeline.audio_encoder)
    pipe.encoded = []
    image = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1  # no exact zeros
    portrait = pipe.prepare_portrait(image, face_box=(0.3, 0.3, 0.7, 0.7))
    audio = pipe.encode_audio(speech_like(0.3), 16000)
    pipe.generate(portrait, audio, SamplingOptions(seed=1, steps=1))
    first_motion = pipe.encoded[1]  # clip 1: the portrait repeated, then masked
    assert first_motion.shape == (2, 3, 64, 64)
    dropped = (first_motion == 0).all(dim=1)  # [2, 64, 64]
    face = portrait.face_region[0].bool()
    assert not dropped[:, face].any()
    assert 0.35 < dropped[:, ~face].float().mean() < 0.65
    assert torch.equal(dropped[0], dropped[1])  # one mask for all motion frames, as Hallo2


def test_family_detection_by_keys_metadata_and_path():
    from pathlib import Path
    from types import SimpleNamespace

    from emo_pipeline.config import hallo_config
    from emo_pipeline.io.loading import CheckpointError, config_for, expected_shapes

    shapes = expected_shapes(hallo_config())
    reader = lambda path, meta={}, s=shapes: SimpleNamespace(path=Path(path), metadata=meta, shapes=s)  # noqa: E731
    assert config_for(reader("models/emo/hallo/net.pth")).name == "hallo"
    hallo2 = config_for(reader("models/emo/hallo2/net.pth"))
    assert hallo2.name == "hallo2" and hallo2.motion_frame_mask_rate == 0.25
    from emo_pipeline.config import tiny_config

    stored = tiny_config().to_json()
    assert config_for(reader("x.safetensors", {"emo_config": stored}, {})).name == "tiny"
    with pytest.raises(CheckpointError, match="1 missing key"):
        config_for(reader("odd.pth", {}, {k: v for k, v in list(shapes.items())[1:]}))


def test_clips_shorter_than_the_motion_frames(tiny_pipeline, tiny_portrait):
    pipe = RecordingPipeline(tiny_pipeline.net, tiny_pipeline.vae, tiny_pipeline.audio_encoder)
    pipe.encoded = []
    audio = pipe.encode_audio(speech_like(0.2), 16000)  # 5 frames
    frames = pipe.generate(tiny_portrait, audio, SamplingOptions(seed=1, steps=1, frames_per_clip=1, motion_frames=3))
    assert frames.shape[0] == 5
    # clip 4's motion frames are the three frames before it, made by three earlier clips
    torch.testing.assert_close(pipe.encoded[4], frames[1:4].permute(0, 3, 1, 2) * 2 - 1)
    # clip 2 had only one earlier frame: the portrait fills the other two places
    torch.testing.assert_close(pipe.encoded[1][:2], tiny_portrait.pixels[None].expand(2, -1, -1, -1))
    torch.testing.assert_close(pipe.encoded[1][2:], frames[0:1].permute(0, 3, 1, 2) * 2 - 1)


def test_a_4x_vae_gives_a_16x16_latent_grid_and_the_masks_follow():
    from emo_pipeline.config import tiny_emo_config
    from emo_pipeline.tiny import tiny_components

    config = tiny_emo_config(face_locator_channels=(8, 16, 16))  # the demo model's grid
    assert config.vae_downscale == 4 and config.latent_size == 16
    pipe = EMOPipeline(*tiny_components(config))
    portrait = pipe.prepare_portrait(torch.rand(64, 64, 3), face_box=(0.25, 0.2, 0.75, 0.8))
    assert portrait.masks[0].face.shape[-1] == 16 * 16
    assert pipe.net.face_locator(portrait.face_region[None]).shape[-2:] == (16, 16)
    audio = pipe.encode_audio(speech_like(0.3), 16000)
    frames = pipe.generate(portrait, audio, SamplingOptions(seed=0, steps=2))
    assert frames.shape == (expected_frames(4800, 16000, "25"), 64, 64, 3)


def test_a_vae_with_another_downscale_is_refused_with_the_fix():
    from emo_pipeline.config import tiny_config
    from emo_pipeline.tiny import tiny_net, tiny_vae

    with pytest.raises(ValueError, match=r"shrinks images 4x but the network 'tiny' expects 8x.*sd-vae-ft-mse"):
        EMOPipeline(tiny_net(tiny_config()), tiny_vae(downscale=4), None)
