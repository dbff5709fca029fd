"""The node pack loaded the way ComfyUI loads it, with only ComfyUI's own modules stubbed."""

import json
from pathlib import Path

import av
import pytest
import torch

import comfy_stubs
from conftest import decoded_frames, speech_like
from emo_pipeline.io.media import read_video_info
from emo_pipeline.tiny import write_tiny_model_folder

NODE_IDS = ["LoadEMOModel", "EMOEncodeAudio", "EMOReferenceNetEncode", "EMOSampler", "EMOVideoCombine",
            "EMOFaceCrop", "EMOPasteBack", "EMODemoInputs", "EMOSampleToVideo", "EMOSeparateVocals", "EMOUpscaleFaceVideo",
            "EMOSamplerOptions", "EMOFamilyOptions", "EMOLoadPoses", "EMOPreviewPoses", "EMOLoadFaceKeypoints",
            "EMOEvaluate", "EMODetectEmotion"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    output = tmp_path_factory.mktemp("output")
    write_tiny_model_folder(models / "emo")
    state = comfy_stubs.install(models, output)
    pack = comfy_stubs.load_pack()
    return pack, state, output


@pytest.fixture(scope="module")
def model(env):
    pack, _, _ = env
    return pack.NODE_CLASS_MAPPINGS["LoadEMOModel"]().load("tiny/net.safetensors", "auto", "auto")[0]


def nodes(env):
    return {k: cls() for k, cls in env[0].NODE_CLASS_MAPPINGS.items()}


def test_node_contract(env):
    pack = env[0]
    assert sorted(pack.NODE_CLASS_MAPPINGS) == sorted(NODE_IDS)
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_IDS)
    assert all("EMO" in node_id for node_id in NODE_IDS)
    for cls in pack.NODE_CLASS_MAPPINGS.values():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"}
        assert callable(getattr(cls(), cls.FUNCTION))
        assert isinstance(cls.RETURN_TYPES, tuple) and len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
        # every declared input is a parameter of FUNCTION
        import inspect

        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        for group in spec.values():
            for name in group:
                assert name in params, f"{cls.__name__}.{name}"
    assert pack.NODE_CLASS_MAPPINGS["EMOVideoCombine"].OUTPUT_NODE is True
    assert pack.NODE_CLASS_MAPPINGS["EMOSampleToVideo"].OUTPUT_NODE is True
    assert pack.WEB_DIRECTORY == "./web"


def test_every_widget_has_a_tooltip_and_a_real_default(env):
    """Every widget of every node says what it does; none shows a magic 0 or -1 for "the model's own": that
    is a "model default" (or "auto") entry of a list, and numbers have defaults inside their range."""
    checked = 0
    for node_id, cls in env[0].NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        for name, (kind, *opts) in {**spec.get("required", {}), **spec.get("optional", {})}.items():
            options = opts[0] if opts else {}
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                checked += 1
                assert len(options.get("tooltip", "")) > 10, f"{node_id}.{name}"
                tooltip = options["tooltip"]
                assert "-1:" not in tooltip and "0: the model's own" not in tooltip, f"{node_id}.{name}"
            if kind in ("INT", "FLOAT"):
                assert options["min"] <= options["default"] <= options["max"], f"{node_id}.{name}"
    assert checked >= 45
    types = {k: {**c.INPUT_TYPES()["required"], **c.INPUT_TYPES().get("optional", {})}
             for k, c in env[0].NODE_CLASS_MAPPINGS.items()}
    for node_id, name in (("EMOSamplerOptions", "frames_per_clip"), ("EMOSamplerOptions", "motion_frames"),
                          ("EMOFamilyOptions", "context_overlap"), ("EMOEncodeAudio", "fps"), ("EMOSampler", "preset")):
        choices, options = types[node_id][name]
        assert choices[0] == options["default"] == "model default", (node_id, name)
    assert types["EMOSampler"]["steps"][1]["min"] == 1 and types["EMOSampler"]["cfg"][1]["default"] > 0
    assert types["EMOPasteBack"]["feather"][1]["default"] == 1 / 16 == types["EMOSampleToVideo"]["feather"][1]["default"]
    assert types["EMODemoInputs"]["seed"][1]["control_after_generate"] is True


def test_options_nodes_chain_and_reach_the_sampler(env, model):
    """EMO Sampler Options and EMO Family Options give the settings they hold, over those of an options node
    before them; the sampler then makes clips of the length given (the progress bar counts their steps)."""
    _, state, _ = env
    n = nodes(env)
    general = n["EMOSamplerOptions"].make("2", "model default", 4, 1.0, 1, 1.0, 1.0, 1.0)[0]
    assert general["frames_per_clip"] == 2 and general["motion_frames"] is None and general["decode_chunk"] == 4
    family = n["EMOFamilyOptions"].make(0.05, "1", "happy", options=general)[0]
    assert family == {**general, "head_speed": 0.05, "context_overlap": 1, "emotion": "happy"}
    again = n["EMOSamplerOptions"].make("model default", "1", 8, 0.5, 2, 1.5, 1.0, 1.0, options=family)[0]
    assert again["frames_per_clip"] is None and again["motion_frames"] == 1 and again["emotion"] == "happy"
    emo_audio, count, _ = n["EMOEncodeAudio"].encode(model, {"waveform": speech_like(0.32)[None], "sample_rate": 16000},
                                                     "model default")
    assert count == 8 and model.pipeline.config.frames_per_clip == 4  # whole clips of either length
    reference, _ = n["EMOReferenceNetEncode"].encode(model, torch.rand(1, 64, 64, 3))
    for options, clip in ((None, model.pipeline.config.frames_per_clip), (family, 2)):
        state.progress.clear()
        (frames,) = n["EMOSampler"].sample(model, reference, emo_audio, 0, 1, 1.0, "custom", "ddim", options)["result"]
        assert len(frames) == count and state.progress[-1][1] == -(-count // clip) * 1, clip
    with pytest.raises(ValueError, match="unknown options"):
        n["EMOSampler"].sample(model, reference, emo_audio, 0, 1, 1.0, "custom", "ddim", {"steps": 3})
    with pytest.raises(ValueError, match="unknown preset 'quality'"):
        n["EMOSampler"].sample(model, reference, emo_audio, 0, 1, 1.0, "quality", "ddim")


def test_loader_lists_networks_not_vae_or_wav2vec(env):
    choices = env[0].NODE_CLASS_MAPPINGS["LoadEMOModel"].INPUT_TYPES()["required"]["checkpoint"][0]
    bundled = ["demo/net.safetensors"] if (comfy_stubs.ROOT / "models" / "demo" / "net.safetensors").is_file() else []
    files = [c for c in choices if not c.startswith("download: ")]
    assert files == sorted(["tiny/net.safetensors", *bundled])
    assert choices[len(files):] == [c for c in choices if c.startswith("download: ")]  # the downloads come last


def test_demo_inputs(env):
    image, audio, mask = nodes(env)["EMODemoInputs"].make(2.0, 7)
    assert image.shape == (1, 256, 256, 3) and audio["waveform"].shape == (1, 1, 32000) and audio["sample_rate"] == 16000
    skin = image[0][mask[0] > 0.5]
    assert mask.shape == (1, 256, 256) and 0.2 < mask.mean() < 0.8 and skin.std(0).max() > 0.05  # the face is in it


def test_five_nodes_make_an_mp4_with_sound(env, model):
    _, state, output = env
    n = nodes(env)
    audio = {"waveform": speech_like(0.5, 44100, channels=2)[None], "sample_rate": 44100}
    emo_audio, count, fps = n["EMOEncodeAudio"].encode(model, audio, "25")
    assert fps == 25.0
    assert count == 13
    reference, portrait = n["EMOReferenceNetEncode"].encode(model, torch.rand(1, 72, 96, 3))
    assert portrait.shape == (1, 64, 64, 3)
    state.progress.clear()
    (frames,) = n["EMOSampler"].sample(model, reference, emo_audio, 1, 2, 3.5, "custom", "ddim")["result"]
    assert frames.shape == (13, 64, 64, 3) and frames.dtype == torch.float32
    assert [p[0] for p in state.progress] == list(range(1, 9)) and state.progress[-1][1] == 8  # 4 clips × 2
    assert state.loads[-1][2] is True  # force_full_load
    result = n["EMOVideoCombine"].combine(frames, 25.0, "EMO/test", 19, audio=audio,
                                          prompt={"1": {}}, extra_pnginfo={"workflow": {"nodes": []}})
    ui = result["ui"]
    assert ui["animated"] == (True,) and ui["images"][0]["type"] == "output"
    path = output / ui["images"][0]["subfolder"] / ui["images"][0]["filename"]
    assert str(path) == result["result"][1] and result["result"][0].file == str(path)
    info = read_video_info(path)
    assert info["frame_count"] == 13
    assert info["audio_duration"] == pytest.approx(13 / 25, abs=1e-3)  # the audio's length, to the frame
    assert json.loads(info["metadata"]["workflow"]) == {"nodes": []}


def test_audio_variants_and_batches(env, model):
    n = nodes(env)
    for rate, channels, seconds, frames in ((8000, 1, 0.4, 10), (44100, 2, 0.1, 3)):
        audio = {"waveform": speech_like(seconds, rate, channels)[None], "sample_rate": rate}
        assert n["EMOEncodeAudio"].encode(model, audio, "25")[1] == frames
    with pytest.raises(ValueError, match="batch of 2 audio clips"):
        n["EMOEncodeAudio"].encode(model, {"waveform": torch.zeros(2, 1, 1600), "sample_rate": 16000}, "25")
    with pytest.raises(ValueError, match="batch of 2 images"):
        n["EMOReferenceNetEncode"].encode(model, torch.rand(2, 64, 64, 3))


def test_face_mask_of_another_size_is_resized_and_empty_mask_ignored(env, model):
    n = nodes(env)
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:24, 8:24] = 1
    reference, _ = n["EMOReferenceNetEncode"].encode(model, torch.rand(1, 64, 64, 3), face_mask=mask)
    assert reference.face_box == pytest.approx((0.25, 0.25, 0.75, 0.75))
    reference, _ = n["EMOReferenceNetEncode"].encode(model, torch.rand(1, 64, 64, 3), face_mask=torch.zeros(1, 64, 64))
    assert reference.face_box == (0.0, 0.0, 1.0, 1.0)


def test_cancel_leaves_no_output(env, model):
    _, state, output = env
    n = nodes(env)
    audio = {"waveform": speech_like(0.3)[None], "sample_rate": 16000}
    emo_audio, _, _ = n["EMOEncodeAudio"].encode(model, audio, "25")
    reference, _ = n["EMOReferenceNetEncode"].encode(model, torch.rand(1, 64, 64, 3))
    state.interrupted = True
    with pytest.raises(comfy_stubs.InterruptProcessingException):
        n["EMOSampler"].sample(model, reference, emo_audio, 0, 3, 3.5, "custom", "ddim")
    assert not state.interrupted


def test_previews_when_enabled(env, model):
    _, state, _ = env
    n = nodes(env)
    emo_audio, _, _ = n["EMOEncodeAudio"].encode(model, {"waveform": speech_like(0.1)[None], "sample_rate": 16000}, "25")
    reference, _ = n["EMOReferenceNetEncode"].encode(model, torch.rand(1, 64, 64, 3))
    from emo_pipeline.preview import FILE, drawn_faces, fit_latent_rgb

    vae_folder = Path(model.pipeline.vae.config._name_or_path)
    state.preview, state.progress = True, []
    try:
        # the tiny VAE has no fitted factors (and is not SD's): no meaningless picture
        n["EMOSampler"].sample(model, reference, emo_audio, 0, 2, 3.5, "custom", "ddim")
        assert [p[2] for p in state.progress] == [False, False]
        fit_latent_rgb(model.pipeline.vae, drawn_faces(8, 64), model.pipeline.config.vae_scaling_factor).save(
            vae_folder / FILE)
        state.progress, state.previews = [], []
        n["EMOSampler"].sample(model, reference, emo_audio, 0, 2, 3.5, "custom", "ddim")
    finally:
        state.preview = False
        (vae_folder / FILE).unlink(missing_ok=True)
    assert [p[2] for p in state.progress] == [True, True]
    assert [(fmt, image.size, side) for fmt, image, side in state.previews] == [("JPEG", (64, 64), 64)] * 2


def test_head_speed_reaches_emo_speed_layers_and_is_ignored_by_hallo(env, model):
    import shutil
    import sys
    from pathlib import Path

    from emo_pipeline.config import tiny_emo_config
    from emo_pipeline.io.loading import save_net
    from emo_pipeline.models import EMONet

    n = nodes(env)
    folder = Path(sys.modules["folder_paths"].models_dir) / "emo" / "tiny-emo"
    torch.manual_seed(0)
    net = EMONet(tiny_emo_config())
    for name, param in net.named_parameters():
        if ".motion_modules." in name and not param.any():  # zero-initialised outputs: give them an effect
            torch.nn.init.normal_(param, std=0.5)
    folder.mkdir()
    audio = {"waveform": speech_like(0.2)[None], "sample_rate": 16000}
    runs = {}
    try:
        save_net(net, folder / "net.safetensors")
        emo = n["LoadEMOModel"].load("tiny-emo/net.safetensors", "auto", "auto")[0]
        for label, m in (("emo", emo), ("hallo", model)):
            emo_audio, _, _ = n["EMOEncodeAudio"].encode(m, audio, "25")
            image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
            reference, _ = n["EMOReferenceNetEncode"].encode(m, image)
            for speed in (0.0, 0.05):
                options = n["EMOFamilyOptions"].make(speed, "model default", "neutral")[0]
                runs[label, speed] = n["EMOSampler"].sample(m, reference, emo_audio, 3, 2, 1.0, "custom", "ddim",
                                                           options)["result"][0]
    finally:
        shutil.rmtree(folder)
    assert (runs["emo", 0.0] - runs["emo", 0.05]).abs().max() > 1e-3
    torch.testing.assert_close(runs["hallo", 0.0], runs["hallo", 0.05], rtol=0, atol=0)


def test_missing_model_names_the_folder(env):
    loader = env[0].NODE_CLASS_MAPPINGS["LoadEMOModel"]()
    with pytest.raises(FileNotFoundError, match=r"models/emo.*net\.pth.*wav2vec"):
        loader.load("(no models in models/emo)", "auto", "auto")


def test_missing_vae_names_the_folder(env, tmp_path):
    import folder_paths
    from emo_pipeline.io.loading import save_net
    from emo_pipeline.tiny import tiny_net

    emo = tmp_path / "emo"
    (emo / "other").mkdir(parents=True)
    save_net(tiny_net(), emo / "other" / "net.safetensors")
    paths = folder_paths.folder_names_and_paths["emo"][0]
    saved, saved_dir = list(paths), folder_paths.models_dir
    paths[:], folder_paths.models_dir = [], str(tmp_path)  # a models/emo with a network but no vae/ or wav2vec/
    try:
        with pytest.raises(FileNotFoundError, match=f"No VAE .* put it in {emo}/other/vae or {emo}/vae"):
            env[0].NODE_CLASS_MAPPINGS["LoadEMOModel"]().load("other/net.safetensors", "auto", "auto")
    finally:
        paths[:], folder_paths.models_dir = saved, saved_dir


def test_vae_from_comfyui_models_vae(env, monkeypatch):
    import folder_paths
    from safetensors.torch import save_file
    from test_model_parts import TINY_VAE_CONFIG, to_ldm

    pack = env[0]
    vae_dir = folder_paths.get_folder_paths("vae")[0]
    import os

    os.makedirs(vae_dir, exist_ok=True)
    from emo_pipeline.tiny import tiny_vae

    reference = tiny_vae(seed=11)
    save_file(to_ldm({k: v.contiguous() for k, v in reference.state_dict().items()}), os.path.join(vae_dir, "my_vae.safetensors"))
    loader = pack.NODE_CLASS_MAPPINGS["LoadEMOModel"]
    assert "my_vae.safetensors" in loader.INPUT_TYPES()["optional"]["vae_name"][0]
    import importlib

    monkeypatch.setattr(importlib.import_module(pack.__name__ + ".emo_pipeline.vae"), "SD_VAE_CONFIG", TINY_VAE_CONFIG)
    model = loader().load("tiny/net.safetensors", "fp32", "cpu", vae_name="my_vae.safetensors")[0]
    for a, b in zip(model.pipeline.vae.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)


def test_face_crop_reference_and_paste_back(env, model):
    from skimage import data

    n = nodes(env)
    photo = torch.from_numpy(data.astronaut()).float()[None] / 255  # 512×512, face upper middle
    portrait, face, mask = n["EMOFaceCrop"].crop(photo, 0.6, 0)
    side = face.box.side
    assert portrait.shape == (1, side, side, 3) and mask.shape == (1, side, side) and 0 < mask.mean() < 1
    reference, _ = n["EMOReferenceNetEncode"].encode(model, portrait, face=face)
    assert reference.face_box == pytest.approx(face.face_box)
    with pytest.raises(ValueError, match="describes another image"):
        n["EMOReferenceNetEncode"].encode(model, photo, face=face)
    frames = torch.rand(3, 64, 64, 3)
    (full,) = n["EMOPasteBack"].paste(frames, photo, face)
    assert full.shape == (3, 512, 512, 3)
    from emo_pipeline.face import paste_back

    assert side >= 32 and side % 16  # a side the 1/16 share does not divide evenly
    assert torch.equal(full, paste_back(frames, photo[0], face.box))  # the default share: the engine's default band
    (hard,) = n["EMOPasteBack"].paste(frames, photo, face, 0.0)
    assert torch.equal(hard, paste_back(frames, photo[0], face.box, 0)) and not torch.equal(hard, full)
    assert torch.equal(full[:, -1, -1], photo[0, -1, -1].expand(3, 3))  # far from the face: unchanged
    # Without a face input the portrait is analysed as it is (the detector still finds the face).
    reference, _ = n["EMOReferenceNetEncode"].encode(model, photo)
    x0, y0, x1, y1 = reference.face_box
    assert 0.25 < (x0 + x1) / 2 < 0.55 and (y0 + y1) / 2 < 0.45


def test_sample_to_video_writes_what_sampler_and_combine_write(env, model):
    """EMO Sample To Video streams clips into the MP4: the same frames, sound and metadata as EMO Sampler →
    (EMO Paste Back →) EMO Video Combine, with the same progress, and no IMAGE batch."""
    from skimage import data

    _, state, output = env
    n = nodes(env)
    audio = {"waveform": speech_like(0.7, 22050)[None], "sample_rate": 22050}
    emo_audio, count, fps = n["EMOEncodeAudio"].encode(model, audio, "model default")
    photo = torch.from_numpy(data.astronaut()[::2, ::2].copy()).float()[None] / 255
    portrait, face, _ = n["EMOFaceCrop"].crop(photo, 0.6, 0)
    reference, _ = n["EMOReferenceNetEncode"].encode(model, portrait, face=face)
    sampling = (model, reference, emo_audio, 5, 2, 2.0, "custom", "ddim")
    defaults = {k: v[1]["default"] for k, v in type(n["EMOSamplerOptions"]).INPUT_TYPES()["required"].items()}
    options = n["EMOSamplerOptions"].make(**defaults)[0]  # every setting given, as the defaults
    for paste in (False, True):
        state.progress.clear()
        (frames,) = n["EMOSampler"].sample(*sampling, options=options)["result"]
        expected_progress, state.progress = state.progress, []
        if paste:
            (frames,) = n["EMOPasteBack"].paste(frames, photo, face, 0.03125, True)
        combined = n["EMOVideoCombine"].combine(frames, fps, "EMO/pair", 19, audio=audio, prompt={"1": {}})
        extra = dict(original=photo, face=face, feather=0.03125, colour_match=True) if paste else {}
        streamed = n["EMOSampleToVideo"].render(*sampling, "EMO/stream", 19, soundtrack=audio, prompt={"1": {}},
                                                options=options, **extra)
        assert state.progress == expected_progress  # the same bar: every step of every clip
        assert streamed["ui"]["animated"] == (True,)
        path = output / streamed["ui"]["images"][0]["subfolder"] / streamed["ui"]["images"][0]["filename"]
        assert str(path) == streamed["result"][1] and path.name.startswith("stream_")
        info = read_video_info(path)
        assert info["frame_count"] == count == 18 and info["fps"] == 25
        assert info["audio_duration"] == pytest.approx(count / fps, abs=1e-3)
        assert (info["width"], info["height"]) == ((256, 256) if paste else (64, 64))
        assert torch.equal(decoded_frames(path), decoded_frames(combined["result"][1]))


def test_sample_to_video_errors_and_cancel(env, model):
    _, state, output = env
    n = nodes(env)
    emo_audio, _, _ = n["EMOEncodeAudio"].encode(model, {"waveform": speech_like(0.3)[None], "sample_rate": 16000}, "model default")
    reference, _ = n["EMOReferenceNetEncode"].encode(model, torch.rand(1, 64, 64, 3))
    sampling = (model, reference, emo_audio, 0, 3, 2.0, "custom", "ddim")
    with pytest.raises(ValueError, match="connect both or neither"):
        n["EMOSampleToVideo"].render(*sampling, "EMO/half", 19, original=torch.rand(1, 64, 64, 3))
    before = sorted(output.rglob("*"))
    state.interrupted = True
    with pytest.raises(comfy_stubs.InterruptProcessingException):
        n["EMOSampleToVideo"].render(*sampling, "EMO/cancelled", 19)
    assert not state.interrupted
    assert sorted(output.rglob("*")) == before  # no partial file left behind


def test_sampler_refuses_an_image_batch_that_cannot_fit(env, model, monkeypatch):
    """Before any step, EMO Sampler says when the frames cannot be held as an IMAGE, and what to use."""
    _, state, _ = env
    n = nodes(env)
    emo_audio, count, _ = n["EMOEncodeAudio"].encode(model, {"waveform": speech_like(2.0)[None], "sample_rate": 16000}, "model default")
    reference, _ = n["EMOReferenceNetEncode"].encode(model, torch.rand(1, 64, 64, 3))
    sampler = __import__(type(n["EMOSampler"]).__module__, fromlist=["available_ram"])
    monkeypatch.setattr(sampler, "available_ram", lambda: count * 64 * 64 * 3 * 4)  # just too little
    state.progress.clear()
    with pytest.raises(ValueError, match="EMO Sample To Video"):
        n["EMOSampler"].sample(model, reference, emo_audio, 0, 1, 2.0, "custom", "ddim")
    assert state.progress == []


def test_loader_lists_echomimic_entry_files_only(env, tmp_path):
    """EchoMimic's download in models/emo/echomimic: its two denoising files are the networks to pick;
    the part files, whisper and the VAE folder are not."""
    from emo_pipeline.tiny import write_tiny_echomimic_folder

    import shutil
    import sys
    from pathlib import Path

    emo = Path(sys.modules["folder_paths"].get_folder_paths("emo")[0])
    folder = write_tiny_echomimic_folder(emo / "echomimic")
    shutil.copy(folder / "denoising_unet.pth", folder / "denoising_unet_acc.pth")
    try:
        listed = [n for n in env[0].NODE_CLASS_MAPPINGS["LoadEMOModel"].INPUT_TYPES()["required"]["checkpoint"][0]
                  if n.startswith("echomimic")]
        assert sorted(listed) == ["echomimic/denoising_unet.pth", "echomimic/denoising_unet_acc.pth"]
    finally:
        shutil.rmtree(folder)


def test_bad_node_inputs_get_plain_errors(env, model):
    n = nodes(env)
    frames = torch.rand(2, 64, 64, 3)
    with pytest.raises(ValueError, match="no frames"):
        n["EMOVideoCombine"].combine(frames[:0], 25.0, "EMO/empty", 19)
    for rate in (0.0, float("nan")):
        with pytest.raises(ValueError, match="frame_rate must be a positive number"):
            n["EMOVideoCombine"].combine(frames, rate, "EMO/bad_rate", 19)
    image = torch.rand(1, 64, 64, 3)
    with pytest.raises(ValueError, match=r"one mask \[H, W\].*\(64,\)"):
        n["EMOReferenceNetEncode"].encode(model, image, face_mask=torch.ones(64))
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    reference, _ = n["EMOReferenceNetEncode"].encode(model, image, face_mask=mask)  # [1, 1, H, W] is one mask
    assert reference.face_box == (0.25, 0.25, 0.75, 0.75)
    sound = {"waveform": speech_like(0.2)[None], "sample_rate": 16000}
    with pytest.raises(ValueError, match="fps must be a positive number"):
        n["EMOEncodeAudio"].encode(model, sound, "nan")
    audio = n["EMOEncodeAudio"].encode(model, sound, "model default")[0]
    with pytest.raises(ValueError, match="guidance scale"):
        n["EMOSampler"].sample(model, reference, audio, 0, 1, float("inf"), "custom", "ddim")


def test_sampler_steps_and_cfg_follow_the_model_unless_set(env):
    """The bundled demo model records 10 steps and cfg 2.0 in its file; preset "model default" takes them
    whatever the steps and cfg widgets show, "custom" takes the widgets."""
    n = nodes(env)
    demo = n["LoadEMOModel"].load("demo/net.safetensors", "auto", "auto")[0]
    config = demo.pipeline.config
    assert (config.steps, config.guidance_scale) == (10, 2.0)
    audio = n["EMOEncodeAudio"].encode(demo, {"waveform": speech_like(0.2)[None], "sample_rate": 16000}, "model default")[0]
    reference, _ = n["EMOReferenceNetEncode"].encode(demo, torch.rand(1, 64, 64, 3))
    rows = []
    hook = demo.pipeline.net.denoising_unet.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    try:
        shown_own = n["EMOSampler"].sample(demo, reference, audio, 0, 40, 3.5, "model default", "ddim")["ui"]
        own = list(rows)
        rows.clear()
        shown_set = n["EMOSampler"].sample(demo, reference, audio, 0, 3, 1.0, "custom", "ddim")["ui"]
    finally:
        hook.remove()
    clips = -(-audio.num_frames // config.frames_per_clip)
    assert own == [2] * (10 * clips)  # the file's 10 steps per clip, guided (cfg 2.0 > 1)
    assert rows == [1] * (3 * clips)  # set on the node: 3 steps, cfg 1 (no guidance)
    # after the run the node shows what ran, not the widgets' 40 and 3.5
    assert shown_own["text"][0].startswith(f"Ran {len(own) // clips} steps, cfg 2, scheduler ddim (preset model "
                                           "default decided steps, cfg)")
    assert shown_set["text"][0].startswith(f"Ran {len(rows) // clips} steps, cfg 1, scheduler ddim (preset custom")


@pytest.mark.parametrize("prefix", ["wav2vec2.", ""], ids=["ctc-prefix", "no-prefix"])
def test_audio_encoder_from_comfyui_models_audio_encoders(env, prefix):
    """A random wav2vec2-base file in ComfyUI's models/audio_encoders (core's conventions: fp16, keys
    with or without the `wav2vec2.` prefix, no config beside it) is listed by Load EMO Model and
    gives the features of the same weights loaded from a transformers folder."""
    import sys
    from pathlib import Path

    from safetensors.torch import save_file
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from emo_pipeline.audio.encoder import AudioEncoder

    folder = Path(sys.modules["folder_paths"].get_folder_paths("audio_encoders")[0])
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(5)
    w2v = Wav2Vec2Model(Wav2Vec2Config()).eval()  # wav2vec2-base's shapes: 12 layers × 768
    w2v.load_state_dict({k: v.half().float() for k, v in w2v.state_dict().items()})
    save_file({prefix + k: v.half().contiguous() for k, v in w2v.state_dict().items()},
              str(folder / "wav2vec2-test.safetensors"))
    w2v.save_pretrained(folder.parent / "w2v_folder")
    try:
        loader = env[0].NODE_CLASS_MAPPINGS["LoadEMOModel"]
        choices = loader.INPUT_TYPES()["optional"]["audio_encoder"][0]
        assert choices == ["(from models/emo)", "wav2vec2-test.safetensors"]
        model = loader().load("tiny/net.safetensors", "auto", "auto", audio_encoder="wav2vec2-test.safetensors")[0]
        speech = speech_like(0.4)[0]
        ours = model.pipeline.audio_encoder(speech, 10)
        assert torch.equal(ours, AudioEncoder.from_pretrained(folder.parent / "w2v_folder")(speech, 10))
        with pytest.raises(FileNotFoundError, match="audio_encoders"):
            loader().load("tiny/net.safetensors", "auto", "auto", audio_encoder="missing.safetensors")
    finally:
        (folder / "wav2vec2-test.safetensors").unlink()


def test_face_models_found_in_comfyui_models_insightface(env, tmp_path):
    """insightface's antelopev2 set where identity packs keep it: models/insightface/models/antelopev2/."""
    import sys
    from pathlib import Path

    pytest.importorskip("onnxruntime")
    from test_face import arcface_model, scrfd_model

    antelope = Path(sys.modules["folder_paths"].models_dir) / "insightface" / "models" / "antelopev2"
    antelope.mkdir(parents=True, exist_ok=True)
    scrfd_model(antelope / "scrfd_10g_bnkps.onnx")
    arcface_model(antelope / "glintr100.onnx", torch.randn(3, 512).numpy())
    import importlib

    face_module = importlib.import_module(type(nodes(env)["EMOFaceCrop"]).__module__)
    face_module._analyzers.clear()
    try:
        assert face_module.face_analyzer().uses_onnx
    finally:
        face_module._analyzers.clear()
        import shutil

        shutil.rmtree(antelope.parent.parent)


def test_paths_stay_inside_the_output_and_model_folders(env, model):
    """Core refuses output prefixes that leave the output folder and resolves model names inside the
    model folders; the stubs do as core does, and the nodes check it themselves too."""
    n = nodes(env)
    with pytest.raises(Exception, match="outside the output folder"):
        n["EMOVideoCombine"].combine(torch.rand(2, 64, 64, 3), 25.0, "../../escaped/emo", 19)
    with pytest.raises(FileNotFoundError):  # '../' cannot reach a file outside models/emo
        n["LoadEMOModel"].load("../emo/tiny/net.safetensors/../../../../etc/passwd", "auto", "auto")
    # were core's check ever gone, the node's own still holds
    import os
    import sys

    folder_paths = sys.modules["folder_paths"]
    strict = folder_paths.get_save_image_path

    def lenient(prefix, output_dir, width=0, height=0):
        subfolder, name = os.path.split(os.path.normpath(prefix))
        return os.path.join(output_dir, subfolder), name, 1, subfolder, prefix

    folder_paths.get_save_image_path = lenient
    try:
        with pytest.raises(ValueError, match="outside the output folder"):
            n["EMOVideoCombine"].combine(torch.rand(2, 64, 64, 3), 25.0, "../../escaped/emo", 19)
    finally:
        folder_paths.get_save_image_path = strict


def test_engine_warnings_reach_the_ui(env, model):
    """Warnings raised while a node runs (Python warnings and the engine's log warnings) are sent to
    the frontend as 'emo.warning' events, which web/emo_warnings.js shows as toasts."""
    import importlib

    n, state = nodes(env), env[1]
    state.messages.clear()
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:24, 8:24] = 1
    n["EMOReferenceNetEncode"].encode(model, torch.rand(1, 64, 64, 3), face_mask=mask)  # a mask of another size
    n["EMOFaceCrop"].crop(torch.rand(1, 96, 96, 3), 0.6, 0)  # noise: the engine logs that it found no face
    sent = [(event, data["node"], data["message"]) for event, data in state.messages]
    # under the name the graph shows (NODE_DISPLAY_NAME_MAPPINGS), not the class name
    shown = env[0].NODE_DISPLAY_NAME_MAPPINGS
    assert shown["EMOReferenceNetEncode"] == "EMO ReferenceNet Encode"
    assert ("emo.warning", shown["EMOReferenceNetEncode"], "The face mask is 32×32, the image 64×64; resizing the "
            "mask.") in sent
    assert any(event == "emo.warning" and node == shown["EMOFaceCrop"] and "no face found" in message
               for event, node, message in sent)
    assert (comfy_stubs.ROOT / "web" / "emo_warnings.js").read_text().count('"emo.warning"') == 1
    # other libraries' warnings (a deprecation raised inside numpy, say) are not shown to the user
    import warnings as python_warnings

    import numpy as np

    state.messages.clear()
    relay = importlib.import_module(type(n["EMOFaceCrop"]).__module__.rsplit(".", 1)[0] + ".notify")

    class Node:
        @relay.relays_warnings
        def run(self):
            python_warnings.warn_explicit("a library's notice", DeprecationWarning, np.__file__, 1)
            return 7

    with python_warnings.catch_warnings(record=True) as passed_on:
        python_warnings.simplefilter("always")
        assert Node().run() == 7
    assert state.messages == [] and any("a library's notice" in str(w.message) for w in passed_on)


def test_memo_download_through_the_nodes(env, monkeypatch):
    """MEMO's download in models/emo/memo: its diffusion_net file stands for the four folders; the emotion widget
    reaches the audio modules, 'auto' samples with flow-matching Euler, and ddim is refused with the choices."""
    import shutil
    import sys
    from pathlib import Path

    from emo_pipeline.config import tiny_memo_config
    from emo_pipeline.families import EMOTIONS
    from emo_pipeline.tiny import write_tiny_memo_folder

    emo = Path(sys.modules["folder_paths"].get_folder_paths("emo")[0])
    staging = emo.parent / "memo_staging"
    folder = write_tiny_memo_folder(staging, tiny_memo_config(name="memo"))
    shutil.move(str(folder), str(emo / "memo"))
    entry = "memo/diffusion_net/diffusion_pytorch_model.safetensors"
    n = nodes(env)
    try:
        listed = [c for c in n["LoadEMOModel"].INPUT_TYPES()["required"]["checkpoint"][0] if c.startswith("memo")]
        assert listed == [entry]
        # the folder holds tiny weights: they are checked against the tiny config instead of the full-size one
        for name, module in list(sys.modules.items()):
            if name.endswith("emo_pipeline.io.loading"):  # the pack's own copy, as ComfyUI imports it
                monkeypatch.setattr(module, "memo_config", lambda resnet_joint_frames: tiny_memo_config(
                    name="memo", resnet_joint_frames=resnet_joint_frames))
        memo = n["LoadEMOModel"].load(entry, "auto", "auto")[0]
        assert memo.pipeline.config.family == "memo" and memo.pipeline.dtype == torch.float32  # CPU
        audio = n["EMOEncodeAudio"].encode(memo, {"waveform": speech_like(0.2)[None], "sample_rate": 16000}, "model default")[0]
        assert audio.fps == 30.0
        reference, _ = n["EMOReferenceNetEncode"].encode(memo, torch.rand(1, 64, 64, 3))
        labels = []
        module = memo.pipeline.net.denoising_unet.down_blocks[0].audio_modules[0]
        hook = module.register_forward_hook(lambda m, args, out: labels.append(args[2].tolist()))
        try:
            options = n["EMOFamilyOptions"].make(0.0, "model default", "surprised")[0]
            (frames,) = n["EMOSampler"].sample(memo, reference, audio, 0, 2, 3.5, "custom", "auto", options)["result"]
        finally:
            hook.remove()
        assert frames.shape == (audio.num_frames, 64, 64, 3)
        assert labels and all(row == [len(EMOTIONS), EMOTIONS.index("surprised")] for row in labels)
        with pytest.raises(ValueError, match="rectified-flow model.*flow_euler"):
            n["EMOSampler"].sample(memo, reference, audio, 0, 2, 0.0, "custom", "ddim")
        # its misc/ folder: the vocal separator is offered, the face models are searched
        (emo / "memo" / "misc" / "vocal_separator").mkdir(parents=True)
        (emo / "memo" / "misc" / "vocal_separator" / "Kim_Vocal_2.onnx").write_bytes(b"")
        (emo / "memo" / "misc" / "face_analysis" / "models").mkdir(parents=True)
        choices = n["EMOSeparateVocals"].INPUT_TYPES()["required"]["model"][0]
        assert "memo/misc/vocal_separator/Kim_Vocal_2.onnx" in choices
        face_module = sys.modules[type(n["EMOFaceCrop"]).__module__]
        face_module.face_analyzer()
        assert any(str(emo / "memo") in folders for folders in face_module._analyzers)
    finally:
        shutil.rmtree(emo / "memo", ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def test_memo_files_other_packs_keep(env, monkeypatch):
    """A MEMO download where other MEMO packs keep it: models/checkpoints/memo/, with the VAE in
    models/vae/stabilityai/sd-vae-ft-mse/ and wav2vec2 in models/wav2vec/facebook/wav2vec2-base-960h/ (nothing in
    models/emo): offered as [checkpoints] memo/..., loaded, and its separator offered."""
    import shutil
    import sys
    from pathlib import Path

    from emo_pipeline.config import tiny_memo_config
    from emo_pipeline.tiny import write_tiny_memo_folder

    models = Path(sys.modules["folder_paths"].models_dir)
    emo = Path(sys.modules["folder_paths"].get_folder_paths("emo")[0])
    staging = models / "other_pack_staging"
    folder = write_tiny_memo_folder(staging, tiny_memo_config(name="memo"))
    (folder / "misc" / "vocal_separator").mkdir(parents=True)
    (folder / "misc" / "vocal_separator" / "Kim_Vocal_2.onnx").write_bytes(b"")
    moves = [(folder, models / "checkpoints" / "memo"),
             (staging / "vae", models / "vae" / "stabilityai" / "sd-vae-ft-mse"),
             (staging / "wav2vec", models / "wav2vec" / "facebook" / "wav2vec2-base-960h"),
             (emo / "vae", staging / "emo_vae"), (emo / "wav2vec", staging / "emo_wav2vec")]  # models/emo has none
    for source, target in moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(target))
    for name, module in list(sys.modules.items()):
        if name.endswith("emo_pipeline.io.loading"):
            monkeypatch.setattr(module, "memo_config", lambda resnet_joint_frames: tiny_memo_config(
                name="memo", resnet_joint_frames=resnet_joint_frames))
    n = nodes(env)
    entry = "[checkpoints] memo/diffusion_net/diffusion_pytorch_model.safetensors"
    try:
        assert entry in n["LoadEMOModel"].INPUT_TYPES()["required"]["checkpoint"][0]
        memo = n["LoadEMOModel"].load(entry, "auto", "auto")[0]
        assert memo.pipeline.config.family == "memo"
        audio = n["EMOEncodeAudio"].encode(memo, {"waveform": speech_like(0.1)[None], "sample_rate": 16000}, "model default")[0]
        reference, _ = n["EMOReferenceNetEncode"].encode(memo, torch.rand(1, 64, 64, 3))
        (frames,) = n["EMOSampler"].sample(memo, reference, audio, 0, 1, 3.5, "custom", "auto")["result"]
        assert frames.shape == (audio.num_frames, 64, 64, 3)
        choice = "[checkpoints] memo/misc/vocal_separator/Kim_Vocal_2.onnx"
        assert choice in n["EMOSeparateVocals"].INPUT_TYPES()["required"]["model"][0]
        assert n["EMOSeparateVocals"]._path(choice) == str(models / "checkpoints" / "memo" / "misc" / "vocal_separator"
                                                           / "Kim_Vocal_2.onnx")
        with pytest.raises(FileNotFoundError, match=r"\[checkpoints\] memo/misc/x.onnx is not in the model folders"):
            n["EMOSeparateVocals"]._path("[checkpoints] memo/misc/x.onnx")
    finally:
        for source, target in reversed(moves):
            if target.exists():
                shutil.move(str(target), str(source))
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(models / "checkpoints" / "memo", ignore_errors=True)


def test_the_demo_model_warns_in_the_graph_when_given_a_photograph(env):
    from test_demo_model import _photograph

    pack, state, _ = env
    n = nodes(env)
    demo = n["LoadEMOModel"].load("demo/net.safetensors", "auto", "auto")[0]
    state.messages.clear()
    n["EMOReferenceNetEncode"].encode(demo, _photograph()[None])
    warned = [d for e, d in state.messages if e == "emo.warning" and "looks like a photograph" in d["message"]]
    assert len(warned) == 1 and warned[0]["node"] == "EMO ReferenceNet Encode"
    # ComfyUI's way first (the loader's download entry), the command line after it; no command-line-only flag
    advice = warned[0]["message"].split("For photographs fetch real weights: ")[1]
    assert advice.startswith("in Load EMO Model's checkpoint list pick 'download: hallo' and press Run")
    assert advice.index("download: hallo") < advice.index("python -m emo_pipeline download hallo")
    assert "--model" not in advice
    state.messages.clear()
    from emo_pipeline.demo_inputs import drawn_portrait

    n["EMOReferenceNetEncode"].encode(demo, drawn_portrait()[None])
    assert not [d for e, d in state.messages if "looks like a photograph" in d["message"]]
