"""EchoMimic v2's poses from a driving video, end to end: `download dwpose` from a local hub (the two ONNX files
checked, a wrong one refused), a real MP4 whose red dot DWPose's hands follow, sampled at 24 fps, on the command line
(`generate --poses clip.mp4`, fitted to `--image`) with a tiny v2 download. DWPose's models are tiny stand-ins of
the real ones' kinds (tests/tiny_dwpose.py): a detector that finds nobody, so the whole frame is the person (as the
reference does), and an estimator whose face and body points sit at planted places and whose hand points follow
the reddest pixel."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import torch

import tiny_dwpose
from conftest import ROOT, WatchedProcess, speech_like
from emo_pipeline.config import tiny_echomimic_v2_config
from emo_pipeline.download import DOWNLOADS, DownloadError, download
from emo_pipeline.io.loading import convert_checkpoint
from emo_pipeline.io.media import read_video_info, write_video
from emo_pipeline.pose_input import DWPOSE_FILES, dwpose_paths, poses_from_video_file
from emo_pipeline.tiny import write_tiny_echomimic_folder
from local_hub import serving

WIDTH, HEIGHT = 48, 64  # the tiny estimator's input
HANDS = tuple(range(91, 133))  # COCO-WholeBody's left and right hands
SIZE = (96, 80)  # the driving video's height, width
NET = "echomimic_v2/net.safetensors"


def planted() -> tuple[np.ndarray, np.ndarray]:
    """Face points high in the crop, shoulders and arms low, the neck (the shoulders' middle) at its centre."""
    bins = np.zeros((133, 2), np.int64)
    peaks = np.zeros((133, 2), np.float32)
    bins[23:91] = (WIDTH, 2 * 18)  # the face's rows: 18 of 64
    bins[:17] = (WIDTH, 2 * 44)  # the body: row 44
    bins[5], bins[6] = (WIDTH - 20, 2 * 40), (WIDTH + 20, 2 * 40)  # the shoulders either side of the centre
    peaks[:91] = 0.9
    return bins, peaks


def write_dwpose(folder) -> tuple:
    folder.mkdir(parents=True, exist_ok=True)
    bins, peaks = planted()
    return (tiny_dwpose.write_detector(folder / DWPOSE_FILES[0], []),
            tiny_dwpose.write_estimator(folder / DWPOSE_FILES[1], WIDTH, HEIGHT, bins, peaks, follow=HANDS))


def dot_video(path, frames: int = 45, fps: int = 30):
    """A grey clip with a red dot moving from left to right, one pixel column further each frame (lossless
    enough at crf 0 for the reddest pixel to stay on the dot)."""
    video = torch.full((frames, *SIZE, 3), 0.3)
    for i in range(frames):
        x = 15 + i
        video[i, 50:54, x:x + 4] = torch.tensor([1.0, 0.0, 0.0])
    write_video(path, video, fps, crf=0)
    return path


def dwpose_repository(folder) -> dict[str, dict[str, bytes]]:
    """yzd-v/DWPose as the hub serves it, with the tiny stand-ins."""
    repository: dict[str, dict[str, bytes]] = {}
    for f, path in zip(DOWNLOADS["dwpose"].files, write_dwpose(folder)):
        repository.setdefault(f.repo, {})[f.path] = path.read_bytes()
    return repository


def test_a_driving_videos_hands_follow_it_at_the_models_rate(tmp_path):
    files = write_dwpose(tmp_path / "emo" / "dwpose")
    assert dwpose_paths([tmp_path / "nowhere", tmp_path / "emo"]) == files
    poses = poses_from_video_file(dot_video(tmp_path / "dot.mp4"), files)
    assert len(poses) == 36 and poses.fps == 24.0  # 45 frames at 30 fps: 1.5 s, sampled at 24 fps
    assert poses.source == "driving video dot.mp4" and poses.body is not None
    x = poses.hands[:, 0, 0, 0].numpy()
    # the dot moves 30 pixels a second; frame k shows the source frame nearest k × 30 / 24
    shown = np.array([round(k * 30 / 24) for k in range(36)])
    moved = (x - x[0]) * (poses.area[1] / poses.frame_size)  # fractions of the crop, in frame fractions
    assert np.all(np.diff(x) >= 0) and x[-1] > x[0]
    crop_width = float(moved[-1]) / float(shown[-1] - shown[0])  # fraction of the crop per source pixel
    # within a pixel of the estimator's 48-wide input, which spans 100 source pixels (the frame padded by 1.25)
    np.testing.assert_allclose(moved, (shown - shown[0]) * crop_width, atol=2.2 * crop_width)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with serving(dwpose_repository(tmp_path / "made"), monkeypatch) as server:
        yield server


def test_download_dwpose_places_both_models_checked(hub, tmp_path):
    models = tmp_path / "models"
    result = download(["dwpose"], models)
    assert sorted(result.placed) == sorted(f.target for f in DOWNLOADS["dwpose"].files)
    assert dwpose_paths([models]) == tuple(models / "dwpose" / name for name in DWPOSE_FILES)


def test_a_detector_of_the_wrong_kind_is_refused_and_not_placed(hub, tmp_path):
    wrong = tiny_dwpose.write_shaped(tmp_path / "wrong.onnx", [[1, 3, 640, 640]], [[1, 100, 4]])
    detector = DOWNLOADS["dwpose"].files[0]
    hub.add(detector.repo, detector.path, wrong.read_bytes())
    models = tmp_path / "models"
    with pytest.raises(DownloadError, match="yolox_l.onnx"):
        download(["dwpose"], models)
    assert dwpose_paths([models]) is None and not (models / "dwpose" / DWPOSE_FILES[0]).exists()


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A model folder as the command line finds it, holding a tiny v2 download and DWPose's two models; the dot
    clip; a voice as long as it; a photo of a person (for fitting: DWPose finds the planted body in any photo)."""
    root = tmp_path_factory.mktemp("pose_video")
    models = root / "cache" / "emo-portrait" / "models"
    folder = write_tiny_echomimic_folder(models / "echomimic_v2", tiny_echomimic_v2_config())
    convert_checkpoint(folder, folder / "net.safetensors", config=tiny_echomimic_v2_config())
    write_dwpose(models / "dwpose")
    dot_video(root / "dot.mp4")
    write_video(root / "voice.mp4", torch.zeros(13, 64, 64, 3), 25, audio=(speech_like(0.5), 16000))
    from PIL import Image

    Image.fromarray(np.full((120, 90, 3), 128, np.uint8)).save(root / "photo.png")
    return root


def run(place, tmp_path, *extra: str) -> tuple[str, object]:
    out = tmp_path / "v2.mp4"
    env = {**os.environ, "XDG_CACHE_HOME": str(place / "cache"), "EMO_THREADS": "1"}
    with WatchedProcess([sys.executable, "-m", "emo_pipeline", "generate", "--model", NET, "--poses",
                         str(place / "dot.mp4"), "--audio", str(place / "voice.mp4"), "--steps", "1", "--cfg", "1",
                         "--out", str(out), "--no-resume", *extra], cwd=ROOT, env=env) as job:
        code, printed, err = job.finish()
    assert code == 0, err
    return printed, out


def test_generate_with_a_driving_video_fitted_to_the_photo(place, tmp_path):
    printed, out = run(place, tmp_path, "--image", str(place / "photo.png"))
    lines = printed.splitlines()
    assert "DWPose: 36 frames of poses from dot.mp4" in lines
    assert any(line.startswith("poses: fitted to the body in the photo (14 keypoints of the photo") for line in lines)
    frames = math.ceil(read_video_info(place / "voice.mp4")["audio_duration"] * 24 - 1e-6)
    assert f"poses: 36 frames (driving video dot.mp4) cut to {frames} for {frames / 24:.1f} s of audio" in lines
    assert read_video_info(out)["frame_count"] == frames


def test_without_dwpose_a_driving_video_names_the_download(place, tmp_path):
    moved = place / "dwpose_aside"
    dwpose = place / "cache" / "emo-portrait" / "models" / "dwpose"
    dwpose.rename(moved)
    try:
        out = tmp_path / "none.mp4"
        env = {**os.environ, "XDG_CACHE_HOME": str(place / "cache"), "EMO_THREADS": "1"}
        with WatchedProcess([sys.executable, "-m", "emo_pipeline", "generate", "--model", NET, "--poses",
                             str(place / "dot.mp4"), "--audio", str(place / "voice.mp4"), "--out", str(out)],
                            cwd=ROOT, env=env) as job:
            code, printed, err = job.finish()
    finally:
        moved.rename(dwpose)
    assert code == 2 and "Traceback" not in err and not out.exists()
    assert "needs DWPose's two models (yolox_l.onnx, dw-ll_ucoco_384.onnx)" in err
    assert "python -m emo_pipeline download dwpose" in err
