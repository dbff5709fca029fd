"""Bad input gets a clear error or a documented behaviour."""

import warnings

import pytest
import torch

from conftest import speech_like
from emo_pipeline.config import EMOConfig, tiny_config
from emo_pipeline.pipeline import check_dtype_supported, EMOPipeline
from emo_pipeline.sampling.steps import SamplingOptions


def test_empty_audio_is_refused(tiny_pipeline):
    with pytest.raises(ValueError, match="empty"):
        tiny_pipeline.encode_audio(torch.zeros(1, 0), 16000)


def test_silent_audio_generates_frames(tiny_pipeline, tiny_portrait):
    audio = tiny_pipeline.encode_audio(torch.zeros(1, 4000), 16000)  # documented: a still mouth, not an error
    assert torch.isfinite(audio.features).all()
    frames = tiny_pipeline.generate(tiny_portrait, audio, SamplingOptions(steps=1))
    assert frames.shape[0] == 7


def test_audio_shorter_than_a_frame_gives_one_frame(tiny_pipeline, tiny_portrait):
    audio = tiny_pipeline.encode_audio(speech_like(0.01), 16000)  # 10 ms < 40 ms: rounds up (documented)
    assert audio.num_frames == 1
    assert tiny_pipeline.generate(tiny_portrait, audio, SamplingOptions(steps=1)).shape[0] == 1


def test_any_rate_and_channel_count(tiny_pipeline):
    stereo_44k = speech_like(0.4, 44100, channels=2)
    mono_8k = speech_like(0.4, 8000)
    a = tiny_pipeline.encode_audio(stereo_44k, 44100)
    b = tiny_pipeline.encode_audio(mono_8k[None], 8000)  # [B=1, C, T]
    assert a.num_frames == b.num_frames == 10


def test_audio_batch_of_two_is_refused(tiny_pipeline):
    with pytest.raises(ValueError, match="batch of 2"):
        tiny_pipeline.encode_audio(torch.zeros(2, 1, 1600), 16000)


def test_tiny_image_is_refused(tiny_pipeline):
    with pytest.raises(ValueError, match="at least 64"):
        tiny_pipeline.prepare_portrait(torch.rand(40, 40, 3))


def test_non_square_image_is_centre_cropped_with_a_warning(tiny_pipeline):
    image = torch.zeros(100, 160, 3)
    image[:, 30:130] = 1.0  # the centred 100×100 square is white
    with pytest.warns(UserWarning, match="not square"):
        portrait = tiny_pipeline.prepare_portrait(image)
    assert portrait.pixels.shape == (3, 64, 64)
    assert portrait.pixels.min() > 0.99


def test_rgba_is_composited_on_white_and_grey_expanded(tiny_pipeline):
    rgba = torch.zeros(64, 64, 4)  # fully transparent black
    assert torch.allclose(tiny_pipeline.prepare_portrait(rgba).pixels, torch.ones(3, 64, 64))
    grey = torch.full((64, 64, 1), 0.5)
    assert tiny_pipeline.prepare_portrait(grey).pixels.abs().max() < 1e-6


def test_image_batch_and_wrong_shapes(tiny_pipeline):
    with pytest.raises(ValueError, match="batch of 2"):
        tiny_pipeline.prepare_portrait(torch.rand(2, 64, 64, 3))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        tiny_pipeline.prepare_portrait(torch.rand(64, 64))


def test_mask_of_wrong_size_and_identity_of_wrong_length(tiny_pipeline):
    with pytest.raises(ValueError, match="Face mask is"):
        tiny_pipeline.prepare_portrait(torch.rand(64, 64, 3), face_mask=torch.ones(32, 32))
    with pytest.raises(ValueError, match="Identity embedding has 5 values"):
        tiny_pipeline.prepare_portrait(torch.rand(64, 64, 3), identity=torch.ones(5))


def test_face_mask_sets_the_face_region(tiny_pipeline):
    mask = torch.zeros(64, 64)
    mask[16:48, 20:44] = 1
    portrait = tiny_pipeline.prepare_portrait(torch.rand(64, 64, 3), face_mask=mask)
    assert portrait.face_box == pytest.approx((20 / 64, 16 / 64, 44 / 64, 48 / 64))
    assert portrait.face_region[0, 32, 32] == 1 and portrait.face_region[0, 0, 0] == 0
    assert [m.full.numel() for m in portrait.masks] == [64, 16, 4, 1]  # 8×8 latent, then /2 per level
    full = portrait.masks[0].full.view(8, 8)
    assert full[4, 4] < 0.2 < full[0, 0]  # background weight is low on the face, high outside


def test_unsupported_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="int8 is not supported on cpu"):
        check_dtype_supported(torch.device("cpu"), torch.int8)


def test_speed_on_a_model_without_speed_layers(tiny_pipeline, tiny_portrait):
    audio = tiny_pipeline.encode_audio(speech_like(0.1), 16000)
    with pytest.raises(ValueError, match="no speed layers"):
        tiny_pipeline.generate(tiny_portrait, audio, SamplingOptions(steps=1, head_speed=0.1))


def test_clip_longer_than_position_encoding(tiny_pipeline, tiny_portrait):
    audio = tiny_pipeline.encode_audio(speech_like(0.1), 16000)
    with pytest.raises(ValueError, match="exceeds 32"):
        tiny_pipeline.generate(tiny_portrait, audio, SamplingOptions(steps=1, frames_per_clip=31))


def test_invalid_config_lists_problems():
    with pytest.raises(ValueError, match="audio_attention must be"):
        EMOConfig(audio_attention="loud")
    with pytest.raises(ValueError, match="Unknown EMO config fields: colour"):
        EMOConfig.from_dict({**tiny_config().to_dict(), "colour": 1})
