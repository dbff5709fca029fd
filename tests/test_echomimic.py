"""EchoMimic family: its download folder read strictly, whisper tokens, context-window sampling."""

import math

import pytest
import torch

from emo_pipeline.components import load_pipeline
from emo_pipeline.config import echomimic_acc_config, echomimic_config, tiny_echomimic_config
from emo_pipeline.io.loading import (CheckpointError, config_for, convert_checkpoint, describe_checkpoint,
                                     expected_shapes, open_network)
from emo_pipeline.pipeline import EMOPipeline
from emo_pipeline.sampling.context_windows import context_windows, shifted
from emo_pipeline.sampling.steps import SamplingOptions
from emo_pipeline.tiny import tiny_components, write_tiny_echomimic_folder


def test_context_windows_cover_every_frame_with_the_given_overlap():
    for frames in (1, 3, 12, 13, 21, 100):
        for size, overlap in ((12, 3), (4, 1), (16, 4), (5, 0)):
            windows = context_windows(frames, size, overlap)
            if frames <= size:
                assert windows == [list(range(frames))]
                continue
            assert all(len(w) == size and len(set(w)) == size for w in windows)
            assert set().union(*windows) == set(range(frames))
            # EchoMimic's uniform schedule: a window starts every size - overlap frames, wrapping at the end
            assert [w[0] for w in windows] == list(range(0, frames, size - overlap))
            for a, b in zip(windows, windows[1:]):
                assert a[-overlap:] == b[:overlap] if overlap else not set(a) & set(b)


def test_windows_move_by_the_shift_each_step():
    window = context_windows(30, 12, 3)[2]
    assert shifted(window, 0, 2, 30) == window
    assert shifted(window, 5, 2, 30) == [(i + 10) % 30 for i in window]


def _tiny_pipeline(**overrides) -> EMOPipeline:
    return EMOPipeline(*tiny_components(tiny_echomimic_config(**overrides)))


def _portrait(pipe):
    return pipe.prepare_portrait(torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0)),
                                 face_box=(0.25, 0.2, 0.75, 0.8))


@pytest.mark.parametrize("seconds,fps", [(0.05, 24.0), (0.2, 24.0), (0.5, 24.0), (0.4, 25.0)])
def test_one_frame_per_audio_frame(seconds, fps):
    """Lengths below one window (2 and 5 frames < 4), several windows, and another frame rate."""
    pipe = _tiny_pipeline()
    audio = pipe.encode_audio(torch.randn(1, round(16000 * seconds)) * 0.1, 16000, fps=fps)
    expected = math.ceil(seconds * fps - 1e-9)
    assert audio.num_frames == expected
    frames = pipe.generate(_portrait(pipe), audio, SamplingOptions(seed=0, steps=2, context_overlap=1))
    assert frames.shape == (expected, 64, 64, 3)
    assert torch.isfinite(frames).all() and 0 <= frames.min() and frames.max() <= 1


def _count_backbone_rows(pipe, audio, options) -> list[int]:
    rows = []
    hook = pipe.net.denoising_unet.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    try:
        pipe.generate(_portrait(pipe), audio, options)
    finally:
        hook.remove()
    return rows


def test_acc_settings_run_six_steps_without_guidance():
    acc = echomimic_acc_config()
    assert (acc.steps, acc.guidance_scale) == (6, 1.0)
    pipe = _tiny_pipeline(steps=acc.steps, guidance_scale=acc.guidance_scale)
    audio = pipe.encode_audio(torch.randn(1, 4000) * 0.1, 16000)  # 6 frames: windows [0-3], [2-5], [4,5,0,1]
    windows = len(context_windows(audio.num_frames, 4, 2))
    rows = _count_backbone_rows(pipe, audio, SamplingOptions(context_overlap=2))
    assert rows == [1] * (6 * windows)  # conditional rows only, 6 steps of every window
    guided = _count_backbone_rows(_tiny_pipeline(), audio, SamplingOptions(steps=3, context_overlap=2))
    assert guided == [2] * (3 * windows)  # the standard weights: [unconditional, conditional]


def test_unconditional_row_drops_audio_reference_and_face():
    """Under guidance the first row hears zero audio, reads no portrait and gets no face features, as
    EchoMimic's pipeline does; the conditional row gets all three."""
    pipe = _tiny_pipeline()
    audio = pipe.encode_audio(torch.randn(1, 4000) * 0.1, 16000)
    seen = {}

    def capture(module, args, kwargs, out):
        seen["cond"] = args[2]

    hook = pipe.net.denoising_unet.register_forward_hook(capture, with_kwargs=True)
    try:
        pipe.generate(_portrait(pipe), audio, SamplingOptions(steps=1))
    finally:
        hook.remove()
    cond = seen["cond"]
    assert cond.batch == 2 and cond.identity is None and cond.motion is None
    assert not cond.audio[0].any() and cond.audio[1].any()
    assert not cond.face_features[0].any() and cond.face_features[1].any()
    f = cond.audio.shape[1]
    assert all(kv.sources == (None,) * f + (0,) * f for kv in cond.reference)


def test_sampling_is_deterministic_in_the_seed_and_audio_matters():
    pipe = _tiny_pipeline()
    portrait = _portrait(pipe)
    speech = torch.randn(1, 4000, generator=torch.Generator().manual_seed(1)) * 0.1
    audio = pipe.encode_audio(speech, 16000)
    options = SamplingOptions(seed=3, steps=2, context_overlap=2)
    a, b = pipe.generate(portrait, audio, options), pipe.generate(portrait, audio, options)
    assert torch.equal(a, b)
    other = pipe.generate(portrait, pipe.encode_audio(speech.flip(-1), 16000), options)
    assert (a - other).abs().max() > 1e-4


def test_deep_cache_is_refused_for_moving_windows():
    pipe = _tiny_pipeline()
    audio = pipe.encode_audio(torch.randn(1, 4000) * 0.1, 16000)
    with pytest.raises(ValueError, match="cache_interval"):
        pipe.generate(_portrait(pipe), audio, SamplingOptions(steps=2, cache_interval=2))


def test_download_folder_loads_converts_and_matches(tmp_path):
    folder = write_tiny_echomimic_folder(tmp_path / "echomimic")
    config = tiny_echomimic_config()
    pipe = load_pipeline(folder, config=config)
    assert pipe.config.family == "echomimic" and pipe.audio_encoder.layers == config.audio_feature_layers
    audio = pipe.encode_audio(torch.randn(1, 4000, generator=torch.Generator().manual_seed(2)) * 0.1, 16000)
    options = SamplingOptions(seed=1, steps=2, context_overlap=2)
    frames = pipe.generate(_portrait(pipe), audio, options)

    # our single file carries the config: no config needed, same frames
    converted = convert_checkpoint(folder, folder / "net.safetensors", config=config)
    again = load_pipeline(converted)
    assert again.config == config
    assert torch.equal(again.generate(_portrait(again), audio, options), frames)


def test_download_folder_errors_name_the_file(tmp_path):
    folder = write_tiny_echomimic_folder(tmp_path / "echomimic")
    config = tiny_echomimic_config()
    (folder / "face_locator.pth").rename(tmp_path / "face_locator.pth")
    with pytest.raises(FileNotFoundError, match="face_locator.pth"):
        load_pipeline(folder, config=config)
    # a wrong file in the folder: the face locator saved where the motion modules belong
    (tmp_path / "face_locator.pth").rename(folder / "face_locator.pth")
    (folder / "motion_module.pth").unlink()
    torch.save(torch.load(folder / "face_locator.pth", weights_only=True), folder / "motion_module.pth")
    with pytest.raises(CheckpointError) as err:
        load_pipeline(folder, config=config)
    message = str(err.value)
    assert "missing" in message and "motion_modules" in message
    assert "motion_module.pth" in message and "do not belong" in message


def _write_full_size_download(folder, acc: bool = False):
    """EchoMimic's four files with every key at its full-size shape, stored as stride-0 views of one
    number each (torch.save keeps the views), so the files take kilobytes."""
    folder.mkdir()
    variant = "_acc" if acc else ""
    shapes = expected_shapes(echomimic_config())
    one = torch.zeros(1)
    files = {"reference_unet.pth": {}, f"denoising_unet{variant}.pth": {}, f"motion_module{variant}.pth": {},
             "face_locator.pth": {}}
    for key, shape in shapes.items():
        part, _, name = key.partition(".")
        if part == "denoising_unet":
            file = f"motion_module{variant}.pth" if ".motion_modules." in name else f"denoising_unet{variant}.pth"
        else:
            file = f"{part}.pth"
        files[file][name] = one.expand(shape)
    for file, state in files.items():
        torch.save(state, folder / file)
    return folder


def test_full_size_download_is_recognised_by_its_keys(tmp_path):
    folder = _write_full_size_download(tmp_path / "echomimic")
    with open_network(folder) as reader:
        assert config_for(reader).name == "echomimic"
    with open_network(folder / "denoising_unet.pth") as reader:
        assert config_for(reader).name == "echomimic"
    text = describe_checkpoint(folder)
    assert "family: EchoMimic (its four .pth files)" in text and "all keys match" in text
    assert "context windows of 12 frames (overlap 3)" in text and "30 steps" in text

    acc = _write_full_size_download(tmp_path / "echomimic_acc", acc=True)
    with open_network(acc) as reader:
        config = config_for(reader)
    assert (config.name, config.steps, config.guidance_scale) == ("echomimic-acc", 6, 1.0)

    # one tensor of the wrong shape: refused, with the file and the key named in the file's own terms
    state = torch.load(folder / "face_locator.pth", weights_only=True)
    state["conv_in.weight"] = torch.zeros(16, 3, 3, 3)  # Hallo's three-channel face locator
    torch.save(state, folder / "face_locator.pth")
    with open_network(folder) as reader, pytest.raises(CheckpointError, match=r"face_locator.pth: 1 key\(s\).*conv_in"):
        config_for(reader)
