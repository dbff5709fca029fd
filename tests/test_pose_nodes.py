"""EchoMimic v2's hand poses in ComfyUI: EMO Load Poses (demo sequences in models/emo/echomimic_v2/poses/, our .npz,
POSE_KEYPOINT), EMO Preview Poses, and the samplers' poses input, on a tiny v2 download loaded by Load EMO Model, with
the pack loaded as ComfyUI loads it (only ComfyUI stubbed)."""

import importlib
import shutil
import sys

import pytest
import torch

import comfy_stubs
from conftest import speech_like
from emo_pipeline.config import tiny_echomimic_v2_config
from emo_pipeline.io.media import read_video_info
from emo_pipeline.poses.demo_files import save_pose_folder, save_pose_npz
from emo_pipeline.poses.sequence import PoseSequence
from emo_pipeline.tiny import write_tiny_echomimic_folder, write_tiny_model_folder

V2 = "echomimic_v2/denoising_unet.pth"


def demo_like(frames: int, seed: int = 0) -> PoseSequence:
    """Two moving hands drawn in a 576×768 area centred in a 768² frame, as EchoMimic v2's demo sequences are."""
    gen = torch.Generator().manual_seed(seed)
    base = 0.3 + 0.4 * torch.rand(2, 21, 2, generator=gen)
    drift = torch.linspace(0, 0.2, frames).view(frames, 1, 1, 1)
    hands = (base + drift * torch.tensor([1.0, -0.5])).clamp(0.05, 0.95)
    return PoseSequence(hands, torch.full((frames, 2, 21), 0.9), (768, 576), (0, 768, 96, 672), 768, 24.0, "demo")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    output = tmp_path_factory.mktemp("output")
    write_tiny_model_folder(models / "emo")  # a Hallo-family model: it ignores poses
    folder = write_tiny_echomimic_folder(models / "emo" / "echomimic_v2", tiny_echomimic_v2_config())
    save_pose_folder(demo_like(10), folder / "poses" / "01")
    save_pose_folder(demo_like(3, seed=1), folder / "poses" / "02")
    save_pose_npz(demo_like(5, seed=2), folder / "poses" / "mine.npz")
    (folder / "poses" / "notes").mkdir()  # a folder with no pose files is no sequence
    state = comfy_stubs.install(models, output)
    pack = comfy_stubs.load_pack()
    patch = pytest.MonkeyPatch()
    for name, module in list(sys.modules.items()):  # the download holds tiny weights: check them against tiny's
        if name.endswith("emo_pipeline.io.loading"):
            patch.setattr(module, "echomimic_v2_config", tiny_echomimic_v2_config)
    yield pack, state, output, folder / "poses"
    patch.undo()


@pytest.fixture(scope="module")
def v2(env):
    return env[0].NODE_CLASS_MAPPINGS["LoadEMOModel"]().load(V2, "auto", "auto")[0]


@pytest.fixture(scope="module")
def pack_poses(env):
    """The pack's own pose module, as ComfyUI imported it (its PoseSequence and PoseError are not the tests' copy's)."""
    return importlib.import_module(env[0].__name__ + ".emo_pipeline.poses.sequence")


def nodes(env):
    return {k: cls() for k, cls in env[0].NODE_CLASS_MAPPINGS.items()}


def encoded(n, model, seconds: float = 0.3):
    audio, count, _ = n["EMOEncodeAudio"].encode(model, {"waveform": speech_like(seconds)[None], "sample_rate": 16000},
                                                  "model default")
    reference, _ = n["EMOReferenceNetEncode"].encode(model, torch.rand(1, 64, 64, 3, generator=torch.Generator()
                                                                       .manual_seed(1)))
    return audio, count, reference


def said(state, text: str) -> list[dict]:
    return [data for event, data in state.messages if event == "emo.warning" and text in data["message"]]


def test_load_poses_lists_the_demo_sequences_and_loads_them(env, pack_poses):
    pack, _, _, folder = env
    load = pack.NODE_CLASS_MAPPINGS["EMOLoadPoses"]
    required = load.INPUT_TYPES()["required"]
    # DWPose's models are not in this models/emo: the driving-video entry says it will fetch them
    assert required["source"][0] == ["01", "02", "mine.npz", "from keypoints",
                                     "from driving video + download: dwpose (~351 MB)"]
    assert required["pose_extension"][0] == ["pingpong", "loop", "hold"]
    assert required["pose_extension"][1]["default"] == "pingpong"
    (poses,) = load().load("01", "loop", 1.0, 0.0, 0.0)
    expected = demo_like(10)
    assert isinstance(poses, pack_poses.PoseSequence) and poses.extension == "loop" and poses.source == "demo poses 01"
    assert len(poses) == 10 and (poses.frame_size, poses.area, poses.placement) == (768, (768, 576), (0, 768, 96, 672))
    torch.testing.assert_close(poses.hands, expected.hands)
    (npz,) = load().load("mine.npz", "hold", 1.0, 0.0, 0.0)
    assert len(npz) == 5 and npz.extension == "hold"
    # scale and offset: PoseSequence.aligned, the extension kept through the sequence's own changes
    (moved,) = load().load("01", "pingpong", 0.5, 0.1, -0.05)
    torch.testing.assert_close(moved.hands, expected.aligned(0.5, (0.1, -0.05)).hands)
    assert moved.for_frame_size(64).extend_to(30)[0].extension == "pingpong"
    with pytest.raises(pack_poses.PoseError, match="no hand of demo poses 01 stays inside the pose area"):
        load().load("01", "pingpong", 1.0, 1.0, 1.0)


def test_a_missing_or_unknown_demo_sequence_says_where_to_put_one(env, pack_poses):
    pack, _, _, folder = env
    load = pack.NODE_CLASS_MAPPINGS["EMOLoadPoses"]
    assert load.VALIDATE_INPUTS("01") is True and load.VALIDATE_INPUTS("from keypoints") is True
    for name in ("03", "../01", "notes"):
        verdict = load.VALIDATE_INPUTS(name)
        assert f"no demo pose sequence '{name}'" in verdict and "assets/halfbody_demo/pose/<name>/" in verdict
        with pytest.raises(pack_poses.PoseError, match=f"no demo pose sequence '{name}'"):
            load().load(name, "pingpong", 1.0, 0.0, 0.0)
    aside = folder.parent / "poses_aside"
    shutil.move(str(folder), str(aside))
    try:
        choices = load.INPUT_TYPES()["required"]["source"][0]
        assert choices == ["(no demo poses in models/emo/echomimic_v2/poses)", "from keypoints",
                           "from driving video + download: dwpose (~351 MB)"]
        assert load.VALIDATE_INPUTS(choices[0]) is True  # the entry runs, and says what to do
        with pytest.raises(pack_poses.PoseError) as error:
            load().load(choices[0], "pingpong", 1.0, 0.0, 0.0)
        message = str(error.value)
        assert f"no demo pose sequences in {folder}" in message
        assert "github.com/antgroup/echomimic_v2" in message and "assets/halfbody_demo/pose/<name>/" in message
        assert f"copy each such folder to {folder}/<name>/" in message and "nothing is downloaded" in message
        assert "from keypoints" in message
    finally:
        shutil.move(str(aside), str(folder))


def keypoint_frames(frames: int, width: int = 512, height: int = 768) -> list[dict]:
    """POSE_KEYPOINT as comfyui_controlnet_aux's DWPose Estimator writes it (pixels), one person, both hands."""
    out = []
    for i in range(frames):
        left = [v for k in range(21) for v in (200 + 3 * k + i, 400 + 2 * k, 0.9)]
        right = [v for k in range(21) for v in (320 - 3 * k, 420 + 2 * k - i, 0.8)]
        out.append({"people": [{"pose_keypoints_2d": [0.0] * 54, "face_keypoints_2d": None,
                                "hand_left_keypoints_2d": left, "hand_right_keypoints_2d": right}],
                    "canvas_width": width, "canvas_height": height})
    return out


def test_poses_from_pose_keypoint(env, pack_poses):
    pack, state, _, _ = env
    load = pack.NODE_CLASS_MAPPINGS["EMOLoadPoses"]
    (poses,) = load().load("from keypoints", "hold", 1.0, 0.0, 0.0, keypoints=keypoint_frames(6))
    assert len(poses) == 6 and poses.hand_count == 2 and poses.extension == "hold" and poses.source == "POSE_KEYPOINT"
    assert poses.frame_size == 768 and poses.area == (768, 512) and poses.placement == (0, 768, 128, 640)
    assert poses.hands[0, 0, 0].tolist() == pytest.approx([200 / 512, 400 / 768])
    with pytest.raises(pack_poses.PoseError, match="nothing is connected to keypoints"):
        load().load("from keypoints", "pingpong", 1.0, 0.0, 0.0)
    state.messages.clear()
    (demo,) = load().load("02", "pingpong", 1.0, 0.0, 0.0, keypoints=keypoint_frames(2))
    assert len(demo) == 3
    assert [d["node"] for d in said(state, "the keypoints connected are ignored")] == ["EMO Load Poses"]


def test_preview_draws_evenly_spaced_frames_over_the_photo(env):
    from emo_pipeline.poses.draw import draw_hands

    pack, _, _, _ = env
    n = nodes(env)
    (poses,) = n["EMOLoadPoses"].load("01", "pingpong", 1.0, 0.0, 0.0)
    (alone,) = n["EMOPreviewPoses"].preview(poses, 3)
    assert alone.shape == (3, 768, 768, 3) and alone.dtype == torch.float32
    picked = poses.tensor_frames([0, 4, 9], draw_hands).permute(1, 2, 3, 0)  # linspace(0, 9, 3) rounded
    assert torch.equal(alone, picked)
    assert alone[:, :, :96].abs().sum() == 0 and alone.sum() > 0  # drawn inside the placed area only
    assert n["EMOPreviewPoses"].preview(poses, 50)[0].shape[0] == 10  # never more frames than the sequence has
    photo = torch.rand(1, 90, 60, 3, generator=torch.Generator().manual_seed(3))
    (over,) = n["EMOPreviewPoses"].preview(poses, 3, image=photo)
    hands = alone.amax(-1) > 0
    assert over.shape == alone.shape and hands.any()
    assert torch.equal(over[hands], alone[hands])
    resized = torch.nn.functional.interpolate(photo.permute(0, 3, 1, 2), size=(768, 768), mode="bilinear",
                                              antialias=True, align_corners=False).clamp(0, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(over[~hands], resized.expand(3, -1, -1, -1)[~hands])
    types = pack.NODE_CLASS_MAPPINGS["EMOPreviewPoses"].INPUT_TYPES()
    assert types["required"]["frames"][1]["default"] == 24


def test_sampler_renders_v2_with_poses_one_frame_per_audio_frame(env, v2):
    """A 10-frame demo sequence drives a longer audio: made as long (looping, as Load Poses chose), said once in
    the graph; the sampler gives one frame per audio frame. Sample To Video takes the same input."""
    _, state, output, _ = env
    n = nodes(env)
    assert v2.pipeline.config.spec.locator_input == "poses"
    audio, count, reference = encoded(n, v2, 0.6)
    assert count > 10  # 0.6 s at 24 fps
    (poses,) = n["EMOLoadPoses"].load("01", "loop", 1.0, 0.0, 0.0)
    state.messages.clear()
    (frames,) = n["EMOSampler"].sample(v2, reference, audio, 0, 1, 1.0, "custom", "ddim", poses=poses)["result"]
    assert frames.shape == (count, 64, 64, 3) and torch.isfinite(frames).all()
    line = f"poses: 10 frames (demo poses 01) extended to {count} by looping for {count / 24:.1f} s of audio"
    assert [(d["node"], d["message"]) for d in said(state, "poses:")] == [("EMO Sampler", line)]
    state.messages.clear()
    result = n["EMOSampleToVideo"].render(v2, reference, audio, 0, 1, 1.0, "custom", "ddim", "EMO/poses", 19,
                                          poses=poses, resume=False)
    assert read_video_info(result["result"][1])["frame_count"] == count
    assert [d["node"] for d in said(state, "extended to")] == ["EMO Sample To Video"]


def test_v2_without_poses_names_emo_load_poses(env, v2, pack_poses):
    _, state, output, _ = env
    n = nodes(env)
    audio, _, reference = encoded(n, v2)
    state.progress.clear()
    with pytest.raises(pack_poses.PoseError, match="EchoMimic v2 is driven by a hand-pose sequence.*connect EMO Load "
                                                   "Poses to the sampler's poses input"):
        n["EMOSampler"].sample(v2, reference, audio, 0, 1, 1.0, "custom", "ddim")
    before = sorted(output.rglob("*"))
    with pytest.raises(pack_poses.PoseError, match="connect EMO Load Poses"):
        n["EMOSampleToVideo"].render(v2, reference, audio, 0, 1, 1.0, "custom", "ddim", "EMO/no_poses", 19)
    assert state.progress == [] and sorted(output.rglob("*")) == before  # refused before any step, no file


def test_poses_given_to_a_model_that_does_not_use_them_are_ignored_with_a_notice(env):
    pack, state, _, _ = env
    n = nodes(env)
    hallo = n["LoadEMOModel"].load("tiny/net.safetensors", "auto", "auto")[0]
    audio, count, reference = encoded(n, hallo, 0.2)
    (poses,) = n["EMOLoadPoses"].load("02", "pingpong", 1.0, 0.0, 0.0)
    state.messages.clear()
    with_poses = n["EMOSampler"].sample(hallo, reference, audio, 0, 1, 1.0, "custom", "ddim", poses=poses)["result"][0]
    notices = said(state, "not driven by hand poses")
    assert len(notices) == 1 and notices[0]["node"] == "EMO Sampler"
    assert notices[0]["message"] == ("EMO / Hallo / Hallo2 models are not driven by hand poses: the poses given "
                                     "(demo poses 02) are ignored.")
    without = n["EMOSampler"].sample(hallo, reference, audio, 0, 1, 1.0, "custom", "ddim")["result"][0]
    assert torch.equal(with_poses, without) and len(without) == count


def test_resumed_progress_is_kept_apart_by_pose_sequence(env, v2):
    """Kept progress of a render with other poses is not continued: the fingerprint names the pose sequence."""
    from emo_pipeline.pose_input import poses_for_render
    from emo_pipeline.render_state import fingerprint
    from emo_pipeline.sampling.steps import SamplingOptions

    n = nodes(env)
    audio, count, reference = encoded(n, v2)
    prints = []
    for name in ("01", "02"):
        (poses,) = n["EMOLoadPoses"].load(name, "pingpong", 1.0, 0.0, 0.0)
        ready, _ = poses_for_render(v2.pipeline.config, poses, count)
        prints.append(fingerprint(v2.pipeline, reference, audio, SamplingOptions(steps=1, poses=ready)))
    assert prints[0]["pose sequence"] != prints[1]["pose sequence"]
    assert {k: v for k, v in prints[0].items() if k != "pose sequence"} == \
        {k: v for k, v in prints[1].items() if k != "pose sequence"}
    assert "pose sequence" not in fingerprint(v2.pipeline, reference, audio, SamplingOptions(steps=1))


def test_load_poses_from_a_driving_video_fetches_dwpose_when_asked(env, pack_poses, tmp_path, monkeypatch):
    """'from driving video + download: dwpose (…)' is the request: DWPose's models are fetched (here from a local
    hub) into models/emo/dwpose, the frames' poses made at 24 fps and fitted to the connected photo; then the entry
    reads plain 'from driving video'. Without the request, a plain error names the download."""
    from local_hub import serving
    from test_pose_video import dot_video, dwpose_repository

    from emo_pipeline.io.media import iter_video_frames

    pack, _, _, folder = env
    load = pack.NODE_CLASS_MAPPINGS["EMOLoadPoses"]
    models = folder.parents[1]  # models/emo
    frames = torch.cat(list(iter_video_frames(dot_video(tmp_path / "dot.mp4", frames=20, fps=24))))
    with pytest.raises(pack_poses.PoseError,
                       match="needs DWPose's two models.*pick 'from driving video \\+ download: dwpose'"):
        load().load("from driving video", "pingpong", 1.0, 0.0, 0.0, frames=frames)
    try:
        with serving(dwpose_repository(tmp_path / "made"), monkeypatch):
            asked = load.INPUT_TYPES()["required"]["source"][0][-1]
            assert asked == "from driving video + download: dwpose (~351 MB)" and load.VALIDATE_INPUTS(asked) is True
            (poses,) = load().load(asked, "loop", 1.0, 0.0, 0.0, frames=frames)
        assert (models / "dwpose" / "yolox_l.onnx").is_file() and len(poses) == 20 and poses.extension == "loop"
        assert load.INPUT_TYPES()["required"]["source"][0][-1] == "from driving video"
        photo = torch.full((1, 120, 90, 3), 0.5)
        (fitted,) = load().load("from driving video", "pingpong", 1.0, 0.0, 0.0, frames=frames, photo=photo)
        assert fitted.area == (768, 768) and not torch.equal(fitted.hands, poses.hands)
    finally:
        shutil.rmtree(models / "dwpose", ignore_errors=True)
