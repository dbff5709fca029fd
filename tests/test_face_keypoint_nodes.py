"""V-Express in ComfyUI: Load EMO Model lists its download by v-express/denoising_unet.bin, the samplers draw the
photo's own face keypoints when nothing is connected (fix_face), and EMO Load Face Keypoints turns a driving video's
frames into head motion through the face_keypoints input; on a tiny V-Express download with an SCRFD-format
detector, the pack loaded as ComfyUI loads it (only ComfyUI stubbed)."""

import sys
from dataclasses import replace

import pytest
import torch

import comfy_stubs
import test_face
from conftest import speech_like
from emo_pipeline.config import tiny_vexpress_config
from emo_pipeline.io.media import read_video_info
from emo_pipeline.tiny import write_tiny_model_folder, write_tiny_vexpress_folder
from test_pose_nodes import said

VX = "v-express/denoising_unet.bin"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    output = tmp_path_factory.mktemp("output")
    write_tiny_vexpress_folder(models / "emo", tiny_vexpress_config())
    # a Hallo-family model, which ignores face keypoints; its wav2vec2 (two layers) replaces V-Express's in the
    # shared wav2vec/, which V-Express reads only the last layer of
    write_tiny_model_folder(models / "emo")
    patch = pytest.MonkeyPatch()
    # SCRFD's output format with one face planted (tests/test_face.py): every frame has exactly one face
    patch.setattr(test_face, "PLANTED", [(8, 2 * (40 * 80 + 30), 0.0)])
    (models / "emo" / "face_analysis" / "models").mkdir(parents=True)
    test_face.scrfd_model(models / "emo" / "face_analysis" / "models" / "scrfd_10g_bnkps.onnx")
    state = comfy_stubs.install(models, output)
    pack = comfy_stubs.load_pack()
    for name, module in list(sys.modules.items()):  # the download holds tiny weights: check them against tiny's
        if name.endswith("emo_pipeline.io.loading"):
            patch.setattr(module, "vexpress_config", lambda: tiny_vexpress_config(name="v-express"))
    yield pack, state, output
    patch.undo()


@pytest.fixture(scope="module")
def vx(env):
    return env[0].NODE_CLASS_MAPPINGS["LoadEMOModel"]().load(VX, "auto", "auto")[0]


def nodes(env):
    return {k: cls() for k, cls in env[0].NODE_CLASS_MAPPINGS.items()}


def encoded(n, model, seconds: float):
    audio, count, _ = n["EMOEncodeAudio"].encode(model, {"waveform": speech_like(seconds)[None], "sample_rate": 16000},
                                                  "model default")
    # bright: the SCRFD-format test model scores its planted face by the picture's mean brightness
    photo = 0.8 + 0.2 * torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    reference, _ = n["EMOReferenceNetEncode"].encode(model, photo)
    return audio, count, reference


def test_the_model_list_shows_the_download_by_one_file(env):
    choices = env[0].NODE_CLASS_MAPPINGS["LoadEMOModel"].INPUT_TYPES()["required"]["checkpoint"][0]
    assert VX in choices
    assert not [c for c in choices if c.startswith("v-express/") and c != VX]  # the other four stand behind it


def test_the_sampler_draws_the_photo_s_keypoints_without_any_connected(env, vx):
    n = nodes(env)
    assert vx.pipeline.config.spec.locator_input == "face_keypoints"
    audio, count, reference = encoded(n, vx, 0.3)
    (frames,) = n["EMOSampler"].sample(vx, reference, audio, 0, 1, 1.0, "custom", "ddim")["result"]
    assert frames.shape == (count, 64, 64, 3) and count == 9 and torch.isfinite(frames).all()


def test_a_driving_video_s_keypoints_move_the_render(env, vx):
    _, state, _ = env
    n = nodes(env)
    audio, count, reference = encoded(n, vx, 0.3)
    grey = torch.linspace(0.75, 0.95, 6).view(6, 1, 1, 1).expand(6, 48, 40, 3).contiguous()
    (driving,) = n["EMOLoadFaceKeypoints"].load("no_retarget", frames=grey)
    assert len(driving.sequence) == 6 and driving.retarget == "no_retarget"
    # the test detector plants its face at the same place of every picture: the video's keypoints are the photo's
    still = n["EMOSampler"].sample(vx, reference, audio, 0, 1, 1.0, "custom", "ddim")["result"][0]
    same = n["EMOSampler"].sample(vx, reference, audio, 0, 1, 1.0, "custom", "ddim",
                                  face_keypoints=driving)["result"][0]
    torch.testing.assert_close(same, still, atol=2e-3, rtol=0)  # within the resize's rounding of the points
    # ... so move them: frame k 8k px right and down (in its 512² frame): the render follows
    frames = driving.sequence.frames + 8.0 * torch.arange(6.0).view(6, 1, 1)
    moving = type(driving)(replace(driving.sequence, frames=frames), "no_retarget")
    moved = n["EMOSampler"].sample(vx, reference, audio, 0, 1, 1.0, "custom", "ddim",
                                   face_keypoints=moving)["result"][0]
    assert (moved[-1] - still[-1]).abs().max() > (moved[0] - still[0]).abs().max()
    assert not torch.equal(moved, still)
    result = n["EMOSampleToVideo"].render(vx, reference, audio, 0, 1, 1.0, "custom", "ddim", "EMO/vx", 19,
                                          face_keypoints=driving, resume=False)
    assert read_video_info(result["result"][1])["frame_count"] == count
    with pytest.raises(Exception, match="neither video nor frames is connected"):
        n["EMOLoadFaceKeypoints"].load("no_retarget")


def test_face_keypoints_given_to_another_model_are_ignored_with_a_notice(env, vx):
    _, state, _ = env
    n = nodes(env)
    hallo = n["LoadEMOModel"].load("tiny/net.safetensors", "auto", "auto")[0]
    audio, _, reference = encoded(n, hallo, 0.2)
    grey = torch.full((3, 40, 40, 3), 0.9)
    (driving,) = n["EMOLoadFaceKeypoints"].load("offset_retarget", frames=grey)
    state.messages.clear()
    n["EMOSampler"].sample(hallo, reference, audio, 0, 1, 1.0, "custom", "ddim", face_keypoints=driving)
    assert len(said(state, "draw no face keypoints")) == 1
