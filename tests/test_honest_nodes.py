"""Warnings that fire only when they are true, and model lists that offer only files that exist (with a
plain way to get the missing ones), through ComfyUI's stubs."""

import pytest
import torch

import comfy_stubs
from emo_pipeline.config import (echomimic_acc_config, echomimic_config, emo_config, hallo2_config, hallo_config,
                                 memo_config, tiny_config)
from emo_pipeline.download import DOWNLOADS, human_size
from emo_pipeline.tiny import write_tiny_model_folder
from emo_pipeline.training.demo import demo_config

NO_FACE = "no face found"
SEPARATOR = "audio_separator/Kim_Vocal_2.onnx"
SEPARATOR_ENTRY = f"download: separator (~{human_size(DOWNLOADS['separator'].approx_bytes)})"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    models, output = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("output")
    write_tiny_model_folder(models / "emo")  # identity tokens of 16 values, as the demo's: no ArcFace
    write_tiny_model_folder(models / "emo", name="arcface", config=tiny_config(identity_dim=512))
    state = comfy_stubs.install(models, output)
    return comfy_stubs.load_pack(), state, models


def nodes(env):
    return {k: cls() for k, cls in env[0].NODE_CLASS_MAPPINGS.items()}


def load(env, name):
    return nodes(env)["LoadEMOModel"].load(name, "auto", "auto")[0]


def sent(state) -> list[str]:
    return [data["message"] for event, data in state.messages if event == "emo.warning"]


def fresh_analyzers(env):
    import sys

    sys.modules[env[0].__name__ + ".nodes.face"]._analyzers.clear()


def test_which_models_use_the_identity_embedding():
    assert all(c.uses_identity_embedding for c in (hallo_config(), hallo2_config(), emo_config(), memo_config()))
    assert not any(c.uses_identity_embedding for c in (echomimic_config(), echomimic_acc_config(), demo_config(),
                                                      tiny_config()))
    assert tiny_config(identity_dim=512).uses_identity_embedding


@pytest.mark.parametrize("name", ["demo/net.safetensors", "arcface/net.safetensors"])
def test_no_face_found_only_without_a_face_mask(env, name):
    """Noise has no face: without a mask the node says so (true); with a mask, which sets the face region,
    it does not, whether or not the model still analyses the portrait for its identity."""
    _, state, _ = env
    n, model = nodes(env), load(env, name)
    noise = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1
    state.messages.clear()
    reference, _ = n["EMOReferenceNetEncode"].encode(model, noise, face_mask=mask)
    assert reference.face_box == pytest.approx((0.25, 0.25, 0.75, 0.75))
    assert not any(NO_FACE in m for m in sent(state))
    n["EMOReferenceNetEncode"].encode(model, noise)
    assert any(NO_FACE in m for m in sent(state))


def test_the_demo_workflow_graph_warns_about_nothing(env):
    """EMO Demo Inputs' portrait and face_mask into the demo model: no warning at all."""
    _, state, _ = env
    n = nodes(env)
    fresh_analyzers(env)
    model = load(env, "demo/net.safetensors")
    portrait, audio, mask = n["EMODemoInputs"].make(1.0, 123456)
    state.messages.clear()
    n["EMOReferenceNetEncode"].encode(model, portrait, face_mask=mask)
    n["EMOEncodeAudio"].encode(model, audio, "25")
    assert sent(state) == []


def test_face_models_notice_only_for_models_that_use_the_identity(env):
    """Without the face models: the model with ArcFace-sized identity tokens gets one short line, once, naming
    the command that fetches them; the demo-sized one (trained on a zero embedding) gets none."""
    _, state, models = env
    n = nodes(env)
    image = torch.rand(1, 64, 64, 3)
    for name in ("tiny/net.safetensors", "demo/net.safetensors"):
        fresh_analyzers(env)
        state.messages.clear()
        n["EMOReferenceNetEncode"].encode(load(env, name), image)
        assert not any("face models" in m for m in sent(state)), name
    fresh_analyzers(env)
    state.messages.clear()
    arcface = load(env, "arcface/net.safetensors")
    n["EMOReferenceNetEncode"].encode(arcface, image)
    n["EMOReferenceNetEncode"].encode(arcface, image)
    notices = [m for m in sent(state) if "face models" in m]
    command = f"python -m emo_pipeline download face --to {models / 'emo'}"
    assert len(notices) == 1 and "\n" not in notices[0] and len(notices[0]) - len(command) < 200
    # inside ComfyUI its own way first (the model's download entry in Load EMO Model), the command line second
    assert notices[0].index("'download: ...' entry in Load EMO Model") < notices[0].index(command)
    assert notices[0].endswith(command)


def test_separator_list_without_and_with_the_file(env):
    """Kim_Vocal_2.onnx absent: the list offers its download entry, not the file; a saved workflow naming
    the file gets a plain message before anything runs. Present: the file, and no download entry."""
    from test_separation import P, write_mask_separator
    import numpy as np

    pack, _, models = env
    node = pack.NODE_CLASS_MAPPINGS["EMOSeparateVocals"]
    spec = node.INPUT_TYPES()["required"]["model"]
    assert spec[0] == [SEPARATOR_ENTRY] and spec[1]["default"] == SEPARATOR_ENTRY
    message = node.VALIDATE_INPUTS(SEPARATOR)  # today's saved workflows hold this value
    assert isinstance(message, str) and f"Pick '{SEPARATOR_ENTRY}'" in message
    assert "python -m emo_pipeline download separator" in message
    assert node.VALIDATE_INPUTS(SEPARATOR_ENTRY) is True
    assert "no separator 'other.onnx'" in node.VALIDATE_INPUTS("other.onnx")
    path = write_mask_separator(models / "emo" / SEPARATOR, np.full((4, P.dim_f), 0.5, np.float32))
    try:
        spec = node.INPUT_TYPES()["required"]["model"]
        assert spec[0] == [SEPARATOR] and spec[1]["default"] == SEPARATOR
        assert node.VALIDATE_INPUTS(SEPARATOR) is True
        assert node._path(SEPARATOR) == str(path)
    finally:
        path.unlink()


def test_upscaler_lists_realesrgan_only_with_its_file_and_names_missing_files_before_running(env):
    pack, _, models = env
    node = pack.NODE_CLASS_MAPPINGS["EMOUpscaleFaceVideo"]
    assert node.INPUT_TYPES()["optional"]["background"][0] == ["auto", "bicubic"]
    message = node.VALIDATE_INPUTS("auto")
    assert isinstance(message, str) and "net_g.pth" in message and "download hallo2-upscaler" in message
    net_g, bg = models / "emo" / "hallo2" / "net_g.pth", models / "emo" / "realesrgan" / "RealESRGAN_x2plus.pth"
    net_g.parent.mkdir(parents=True)
    net_g.write_bytes(b"")
    try:
        assert node.VALIDATE_INPUTS("auto") is True and node.VALIDATE_INPUTS("bicubic") is True
        message = node.VALIDATE_INPUTS("realesrgan")  # a workflow saved where the file was
        assert isinstance(message, str) and "RealESRGAN_x2plus.pth" in message and "auto or bicubic" in message
        bg.parent.mkdir(parents=True)
        bg.write_bytes(b"")
        assert node.INPUT_TYPES()["optional"]["background"][0] == ["auto", "realesrgan", "bicubic"]
        assert node.VALIDATE_INPUTS("realesrgan") is True
    finally:
        net_g.unlink()
        bg.unlink(missing_ok=True)


def test_loader_lists_only_networks_that_exist(env):
    """Load EMO Model: files that exist, then download entries for the families not yet downloaded; a
    saved workflow's network that is not there gets a plain message."""
    pack, _, _ = env
    loader = pack.NODE_CLASS_MAPPINGS["LoadEMOModel"]
    choices = loader.INPUT_TYPES()["required"]["checkpoint"][0]
    files = [c for c in choices if not c.startswith("download: ")]
    assert files and all(loader.VALIDATE_INPUTS(c) is True for c in files)
    assert "arcface/net.safetensors" in files and "tiny/net.safetensors" in files
    assert "pick one from Load EMO Model's list" in loader.VALIDATE_INPUTS("gone/net.safetensors")


def test_advice_is_the_command_line_outside_comfyui_and_comfyui_first_inside():
    """The same engine warning, raised by a script or the command line, gives the command; raised while a node
    runs (advice.comfyui_run, which the nodes' relay sets), the node's way first and the command second."""
    from emo_pipeline.io.advice import comfyui_run, in_comfyui
    from emo_pipeline.face.analysis import face_models_notice
    from emo_pipeline.portrait import demo_photo_warning

    outside = (demo_photo_warning(), face_models_notice("models/emo"))
    with comfyui_run():
        assert in_comfyui()
        inside = (demo_photo_warning(), face_models_notice("models/emo"))
    assert not in_comfyui()
    for message in outside:
        assert "python -m emo_pipeline download" in message and "Load EMO Model" not in message
    for message in inside:
        assert message.index("Load EMO Model") < message.index("python -m emo_pipeline download")
