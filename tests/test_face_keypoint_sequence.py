"""V-Express's face keypoint sequences (emo_pipeline/poses/face_keypoint_sequence.py), against answers worked out
here: the length fitting against the linear-interpolation formula, the four retarget strategies against values
worked by hand (V-Express's "closest frame" bug included), the drawn frames against the drawing, files through real
round trips (.npz; kps.pth written by torch.save of numpy arrays, zip and legacy format), hostile pickles refused
with nothing run, the photo's and a real PyAV video's keypoints through stub detectors and tiny SCRFD models.
benchmarks/vexpress_retarget.py runs V-Express's own retarget_kps beside ours."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import test_face
from emo_pipeline.face.analysis import FaceAnalyzer, FaceInfo
from emo_pipeline.face.scrfd import SCRFD, STRIDES
from emo_pipeline.io.media import write_video
from emo_pipeline.poses import face_keypoint_sequence as fks
from emo_pipeline.poses.dwpose import resize_linear
from emo_pipeline.poses.face_keypoint_sequence import FaceKeypointSequence, PoseError
from emo_pipeline.poses.face_keypoints import draw_face_keypoints

# A photo's keypoints: eyes 100 px apart, the nose 50 px below the middle of them (eye-nose ratio 1)
REF = np.array([[100, 100], [200, 100], [150, 150]], np.float32)


def seq(frames, frame_size: int = 512, fps: float = 30.0) -> FaceKeypointSequence:
    return FaceKeypointSequence(torch.tensor(np.asarray(frames, np.float32)), frame_size, fps, "test keypoints")


# ----------------------------------------------------------------------------------------- length fitting
def linear_stretch(values: np.ndarray, length: int) -> np.ndarray:
    """align_corners=False linear resampling written out: output i reads source (i + 0.5) * n / L - 0.5, clamped."""
    n = len(values)
    out = []
    for i in range(length):
        src = max((i + 0.5) * n / length - 0.5, 0.0)
        lo = min(int(math.floor(src)), n - 1)
        hi = min(lo + 1, n - 1)
        w = src - lo
        out.append(values[lo] * (1 - w) + values[hi] * w)
    return np.array(out)


def test_fit_length_stretches_linearly_and_keeps_the_first_frames_of_a_longer_sequence():
    rng = np.random.default_rng(0)
    short = rng.uniform(0, 512, (4, 3, 2)).astype(np.float32)
    np.testing.assert_allclose(fks.fit_length(short, 7).numpy(), linear_stretch(short.astype(np.float64), 7),
                               atol=1e-4)
    long = rng.uniform(0, 512, (10, 3, 2)).astype(np.float32)
    np.testing.assert_array_equal(fks.fit_length(long, 6).numpy(), long[:6])  # cut, then the identity
    np.testing.assert_array_equal(fks.fit_length(long, 10).numpy(), long)
    # one frame held (torch's weights blend it with itself: the last bit may move, as in V-Express)
    np.testing.assert_allclose(fks.fit_length(long[:1], 5).numpy(), np.repeat(long[:1], 5, 0), rtol=1e-6)
    # by hand: two frames x = 0 and x = 10 stretched to 4: sources -0.25→0, 0.25, 0.75, 1.25→1
    two = np.zeros((2, 3, 2), np.float32)
    two[1] = 10
    assert fks.fit_length(two, 4)[:, 0, 0].tolist() == pytest.approx([0.0, 2.5, 7.5, 10.0])
    with pytest.raises(PoseError, match="at least 1"):
        fks.fit_length(two, 0)


def test_extend_to_says_what_it_did_in_each_mode():
    frames = np.arange(3 * 6, dtype=np.float32).reshape(3, 3, 2)
    s = seq(frames, fps=25.0)
    same, line = s.extend_to(3)
    assert same is s and line == ""
    stretched, line = s.extend_to(5)
    assert len(stretched) == 5 and "stretched to 5" in line and "0.2 s" in line
    cut, line = s.extend_to(2)
    assert torch.equal(cut.frames, s.frames[:2]) and "cut to 2" in line
    ping, line = s.extend_to(6, "pingpong")
    assert torch.equal(ping.frames, s.frames[[0, 1, 2, 1, 0, 1]]) and "ping-pong" in line
    held, _ = s.extend_to(5, "hold")
    assert torch.equal(held.frames, s.frames[[0, 1, 2, 2, 2]])
    with pytest.raises(PoseError, match="not known"):
        s.extend_to(5, "bounce")
    with pytest.raises(PoseError, match="at least 1"):
        s.extend_to(0)


# ----------------------------------------------------------------------------------------------- retarget
def small_face(dx: float = 0.0, dy: float = 0.0) -> list[list[float]]:
    """Eyes 50 px apart, the nose 20 px below their middle (ratio 1, eye distance 50, nose height 20)."""
    return [[0 + dx, 0 + dy], [50 + dx, 0 + dy], [25 + dx, 20 + dy]]


def test_fix_face_and_no_retarget():
    driving = np.array([small_face(), small_face(10, 4)], np.float32)
    fixed = fks.retarget(REF, driving, "fix_face")
    assert fixed.dtype == np.float32 and np.array_equal(fixed, np.stack([REF, REF]))
    assert np.array_equal(fks.retarget(REF, driving, "no_retarget"), driving)


def test_offset_and_naive_retarget_by_hand():
    # both frames have the photo's ratio; scale 100/50 = 2 across, 50/20 = 2.5 down. Scaled: frame 0
    # [[0, 0], [100, 0], [50, 50]], frame 1 (x + 10) * 2, (y + 4) * 2.5 = [[20, 10], [120, 10], [70, 60]]
    driving = np.array([small_face(), small_face(10, 4)], np.float32)
    offset = fks.retarget(REF, driving, "offset_retarget")
    # the nose moved (20, 10) since frame 0: the photo's points move by minus half of it (V-Express's rule)
    np.testing.assert_allclose(offset, [REF, REF - [10, 5]], atol=1e-4)
    naive = fks.retarget(REF, driving, "naive_retarget")
    # frame 0's scaled nose (50, 50) is put on the photo's nose (150, 150): everything moves by (100, 100)
    np.testing.assert_allclose(naive, [[[100, 100], [200, 100], [150, 150]], [[120, 110], [220, 110], [170, 160]]],
                               atol=1e-4)
    assert offset.dtype == naive.dtype == np.float32


def test_retarget_measures_on_the_frame_v_express_bug_picks_not_the_closest():
    # Photo ratio 1. Frame 0: ratio ~7.2 (picked first; the bar becomes 7.2, not 6.2). Frame 1: ratio 1, truly
    # the closest (bar becomes 1). Frame 2: ratio 10/7.5 = 1.33, |0.33| < 1 so V-Express measures on it.
    frames = np.array([[[0, 0], [40, 0], [36, 3]],
                       [[0, 0], [40, 0], [20, 30]],
                       [[0, 0], [12.5, 0], [8, 6]]], np.float32)
    ratios = [math.hypot(*(f[0] - f[2])) / (math.hypot(*(f[1] - f[2])) + 1e-6) for f in frames.astype(np.float64)]
    assert ratios == pytest.approx([math.sqrt(36 ** 2 + 9) / 5, 1.0, 10 / 7.5], rel=1e-6)
    naive = fks.retarget(REF, frames, "naive_retarget")
    # measured on frame 2: across 100 / 12.5 = 8, down 50 / 6 (its nose is 6 px from the eye segment)
    sw, sh = 8.0, 50 / 6
    scaled = frames.astype(np.float64) * [sw, sh]
    expected = scaled - (scaled[0, 2] - REF[2])
    np.testing.assert_allclose(naive, expected, atol=1e-3)
    # the closest frame (1) would have given 2.5 and 5/3: not what V-Express does
    assert not np.allclose(naive, frames * [2.5, 50 / 30] - (frames[0, 2] * [2.5, 50 / 30] - REF[2]), atol=1)


def test_nose_beyond_the_eye_segment_is_measured_to_the_nearer_eye():
    # The frame's nose lies past the right eye: its distance to the segment is to that eye (projection clamped).
    frames = np.array([[[0, 0], [10, 0], [16, 8]]], np.float32)  # 10 px from eye 1: hypot(6, 8)
    naive = fks.retarget(REF, frames, "naive_retarget")
    scaled = frames.astype(np.float64) * [100 / 10, 50 / 10]
    np.testing.assert_allclose(naive, scaled - (scaled[0, 2] - REF[2]), atol=1e-4)


def test_retarget_refuses_what_cannot_be_scaled_and_unknown_strategies():
    flat = np.array([[[0, 0], [50, 0], [25, 0]]], np.float32)  # nose on the line between the eyes
    with pytest.raises(PoseError, match="frame 0.*nose on the line between the eyes"):
        fks.retarget(REF, flat, "offset_retarget")
    with pytest.raises(PoseError, match="not known.*fix_face"):
        fks.retarget(REF, flat, "mirror")
    with pytest.raises(PoseError, match=r"\[frames, 3, 2\]"):
        fks.retarget(REF, np.zeros((4, 5, 2), np.float32), "naive_retarget")
    with pytest.raises(PoseError, match="NaN"):
        fks.retarget(np.full((3, 2), np.nan), flat, "naive_retarget")


def test_face_keypoints_for_video_fits_then_retargets_and_scales_driving_frames():
    driving = seq([small_face(), small_face(10, 4)], frame_size=256)  # measured in a 256² frame: doubled for 512
    result, line = fks.face_keypoints_for_video(REF, 3, "no_retarget", driving, frame_size=512)
    expected = linear_stretch(np.array([small_face(), small_face(10, 4)]) * 2, 3)
    np.testing.assert_allclose(result.frames.numpy(), expected, atol=1e-4)
    assert result.frame_size == 512 and "stretched to 3" in line and "no_retarget" in line
    fixed, line = fks.face_keypoints_for_video(REF, 4)  # fix_face: no driving keypoints needed
    assert torch.equal(fixed.frames, torch.from_numpy(np.stack([REF] * 4))) and "fix_face" in line
    with pytest.raises(PoseError, match="driving video.*fix_face"):
        fks.face_keypoints_for_video(REF, 4, "offset_retarget")


# ------------------------------------------------------------------------------------------------ drawing
def test_tensor_frames_draws_the_listed_frames_only():
    frames = np.array([REF, REF + [30, -20], REF + [-40, 60]], np.float32)
    s = seq(frames, frame_size=256)
    out = s.tensor_frames([2, 0])
    assert out.shape == (3, 2, 256, 256) and out.dtype == torch.float32
    for k, index in enumerate([2, 0]):
        expected = torch.from_numpy(draw_face_keypoints(frames[index], 256, 256)).permute(2, 0, 1).float() / 255
        assert torch.equal(out[:, k], expected)
    x, y = (REF[2] + [-40, 60]).astype(int)  # frame 2's nose: a blue dot
    assert out[:, 0, y, x].tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(PoseError, match="frames 0..3"):
        s.tensor_frames([0, 3])


def test_for_frame_size_scales_every_coordinate():
    s = seq([REF], frame_size=512)
    assert s.for_frame_size(512) is s
    half = s.for_frame_size(256)
    assert half.frame_size == 256 and torch.equal(half.frames[0], torch.from_numpy(REF / 2))
    with pytest.raises(PoseError, match="whole number"):
        s.for_frame_size(0)


def test_validate_names_the_bad_frames():
    frames = np.stack([REF] * 4)
    frames[2, 1, 0] = np.nan
    with pytest.raises(PoseError, match="frame 2 hold NaN"):
        seq(frames).validate()
    with pytest.raises(PoseError, match=r"not \[frames, 3, 2\]"):
        seq(np.zeros((3, 5, 2))).validate()


# -------------------------------------------------------------------------------------------------- files
def kps_list(n: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [(REF + rng.normal(0, 4, (3, 2))).astype(np.float32) for _ in range(n)]


def test_npz_round_trip(tmp_path):
    original = FaceKeypointSequence(torch.from_numpy(np.stack(kps_list())), 384, 25.0, "clip A")
    path = fks.save_face_keypoints_npz(original, tmp_path / "k.npz")
    back = fks.load_face_keypoints(path)
    assert torch.equal(back.frames, original.frames)
    assert (back.frame_size, back.fps, back.source) == (384, 25.0, "clip A")


def test_npz_with_an_object_array_or_missing_keys_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", frames=np.array([{"a": 1}], dtype=object), frame_size=512, fps=30.0)
    with pytest.raises(PoseError, match="plain arrays"):
        fks.load_face_keypoints_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "few.npz", frames=np.zeros((2, 3, 2), np.float32))
    with pytest.raises(PoseError, match="has no frame_size, fps"):
        fks.load_face_keypoints_npz(tmp_path / "few.npz")


@pytest.mark.parametrize("zipped", [True, False])
def test_kps_pth_written_by_torch_save_reads_back(tmp_path, zipped):
    frames = kps_list(7)
    path = tmp_path / "kps.pth"
    torch.save(frames, path, _use_new_zipfile_serialization=zipped)
    read = fks.read_kps_pth(path)
    assert read.dtype == np.float32 and np.array_equal(read, np.stack(frames))
    loaded = fks.load_face_keypoints(path, frame_size=512, fps=25.0)
    assert len(loaded) == 7 and loaded.fps == 25.0 and loaded.source == "keypoint file kps.pth"


def test_kps_as_a_plain_protocol_2_pickle_reads_back(tmp_path):
    frames = kps_list(3)
    (tmp_path / "kps.pkl").write_bytes(pickle.dumps(frames, protocol=2))
    assert np.array_equal(fks.read_kps_pth(tmp_path / "kps.pkl"), np.stack(frames))


class Hostile:
    """Pickles as a call of `function(*arguments)`: what a booby-trapped keypoint file does."""

    def __init__(self, function, *arguments):
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


@pytest.mark.parametrize("zipped", [True, False])
@pytest.mark.parametrize("call", ["system", "eval"])
def test_hostile_kps_files_are_refused_and_nothing_runs(tmp_path, zipped, call):
    marker = tmp_path / "ran"
    payload = (Hostile(os.system, f"touch {marker}") if call == "system"
               else Hostile(eval, f"open({str(marker)!r}, 'w').close()"))
    path = tmp_path / "kps.pth"
    torch.save([kps_list(1)[0], payload], path, _use_new_zipfile_serialization=zipped)
    refused = r"refused: it asks for (posix|os|builtins|__builtin__)\.(system|eval).*nothing in this one was run"
    with pytest.raises(PoseError, match=refused):
        fks.read_kps_pth(path)
    assert not marker.exists()


def test_codecs_encode_is_allowed_only_for_pickled_bytes(tmp_path):
    # _codecs.encode is allowed because protocol 2 writes bytes with it (text, 'latin1'); nothing else passes
    path = tmp_path / "kps.pkl"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(PoseError, match="damaged or no keypoint file"):
        fks.read_kps_pth(path)


def test_kps_files_with_wrong_contents_get_plain_messages(tmp_path):
    cases = {
        "nan": ([REF, np.array([[1, 2], [np.nan, 3], [4, 5]], np.float32)], "frame 1 hold NaN"),
        "shape": ([REF, np.zeros((5, 2), np.float32)], r"frame 1 is an array of float32 with shape \(5, 2\)"),
        "empty": ([], "no frames"),
        "dict": ({"kps": REF}, "holds a dict, not a list"),
        "tensor": ([torch.from_numpy(REF)], "holds torch tensors"),
    }
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / f"{name}.pth")
        with pytest.raises(PoseError, match=message):
            fks.read_kps_pth(tmp_path / f"{name}.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "nan.pth").read_bytes()[:200])
    with pytest.raises(PoseError, match="cut.pth"):
        fks.read_kps_pth(tmp_path / "cut.pth")
    with pytest.raises(PoseError, match="not a file"):
        fks.load_face_keypoints(tmp_path / "absent.pth")


# ---------------------------------------------------------------------------------------- face detection
class StubAnalyzer:
    """faces() as FaceAnalyzer gives them (largest first), from a function of the image; records the images."""

    def __init__(self, faces_of):
        self.faces_of, self.seen = faces_of, []

    def faces(self, image):
        self.seen.append(image.copy())
        return self.faces_of(image)


def five(points) -> np.ndarray:
    """Five landmarks whose first three are `points` (the mouth corners are not used)."""
    return np.vstack([np.asarray(points, np.float32), [[0, 0], [0, 0]]]).astype(np.float32)


def test_reference_keypoints_resize_the_photo_and_take_the_highest_score():
    photo = (np.random.default_rng(4).random((300, 200, 3)) * 255).astype(np.uint8)
    big = FaceInfo((0, 0, 400, 400), 0.6, five(REF + 7))
    sure = FaceInfo((0, 0, 50, 50), 0.9, five(REF))
    analyzer = StubAnalyzer(lambda image: [big, sure])
    got = fks.reference_keypoints(photo, 512, analyzer)
    assert got.dtype == np.float32 and np.array_equal(got, REF)  # the surest face, not the largest
    assert np.array_equal(analyzer.seen[0], resize_linear(photo, 512, 512))
    with pytest.raises(PoseError, match="no face is found in the reference photo"):
        fks.reference_keypoints(photo, 512, StubAnalyzer(lambda image: []))
    with pytest.raises(PoseError, match="uint8"):
        fks.reference_keypoints(photo.astype(np.float32), 512, analyzer)


def test_reference_keypoints_without_landmarks_say_to_fetch_the_face_models():
    analyzer = FaceAnalyzer([])  # no ONNX models: the built-in cascade, boxes only
    with pytest.raises(PoseError, match="no SCRFD face model.*download face"):
        fks.reference_keypoints(np.zeros((64, 64, 3), np.uint8), 64, analyzer)


class DynamicScrfdSession:
    """An SCRFD-format model that takes any input size (as insightface's det_10g does): two faces planted at
    given anchors; records the input sizes it is run at."""

    def __init__(self, planted):
        self.planted, self.sizes = planted, []  # (stride, cell row, cell column, score, box half-size in strides)

    def get_inputs(self):
        return [SimpleNamespace(name="input.1", shape=[1, 3, "?", "?"])]

    def run(self, _, feeds):
        size = feeds["input.1"].shape[2]
        self.sizes.append(tuple(feeds["input.1"].shape))
        scores, boxes, kps = [], [], []
        for stride in STRIDES:
            n = size // stride
            score, box, points = (np.zeros((n * n * 2, 1), np.float32), np.zeros((n * n * 2, 4), np.float32),
                                  np.zeros((n * n * 2, 10), np.float32))
            for s, row, col, value, half in self.planted:
                if s == stride:
                    anchor = (row * n + col) * 2
                    score[anchor], box[anchor] = value, half
                    points[anchor] = [-1, -1, 1, -1, 0, 0.5, 0, 0, 0, 0]  # eyes up left and right, nose below
            scores.append(score), boxes.append(box), kps.append(points)
        return scores + boxes + kps


def test_scrfd_runs_at_the_frame_size_and_its_surest_face_is_taken():
    # at stride 8 a small sure face (centre (80, 160)); at stride 32 a larger, less sure one, far from it
    session = DynamicScrfdSession([(8, 20, 10, 0.9, 2.0), (32, 12, 12, 0.7, 3.0)])
    analyzer = SimpleNamespace(detector=SCRFD(session))  # FaceAnalyzer's own detector runs at 640
    got = fks.reference_keypoints(np.full((100, 80, 3), 120, np.uint8), 512, analyzer)
    assert session.sizes == [(1, 3, 512, 512)]  # V-Express's det_size = the frame size: no letterbox scaling
    np.testing.assert_allclose(got, [[80 - 8, 160 - 8], [80 + 8, 160 - 8], [80, 164]])


def test_tiny_scrfd_of_fixed_size_through_face_analyzer(tmp_path, monkeypatch):
    # test_face's SCRFD-format model takes 640² only: ours runs it at its own size and scales back, and takes the
    # surer of its two planted faces (stride 8, boosted) over the larger (stride 32)
    monkeypatch.setattr(test_face, "PLANTED", [(8, 2 * (40 * 80 + 30), 0.1), (32, 2 * (5 * 20 + 12) + 1, 0.0)])
    test_face.scrfd_model(tmp_path / "scrfd_10g_bnkps.onnx")
    analyzer = FaceAnalyzer([tmp_path])
    got = fks.reference_keypoints(np.full((300, 200, 3), 230, np.uint8), 512, analyzer)
    _, expected = test_face.expected_detection(8, 2 * (40 * 80 + 30), 640 / 512)
    np.testing.assert_allclose(got, expected[:3], atol=1e-3)


# ------------------------------------------------------------------------------------------ driving video
GREY0, GREY_STEP = 20, 18  # frame i of the test video is a flat grey of GREY0 + GREY_STEP * i


def frame_keypoints(index: int) -> np.ndarray:
    return (REF + [3.0 * index, -2.0 * index]).astype(np.float32)


def grey_index(image: np.ndarray) -> int:
    return int(round((float(image.mean()) - GREY0) / GREY_STEP))


def write_grey_video(path: Path, frames: int, fps: float) -> Path:
    greys = torch.tensor([GREY0 + GREY_STEP * i for i in range(frames)], dtype=torch.float32) / 255
    return write_video(path, greys[:, None, None, None].expand(frames, 48, 64, 3).contiguous(), fps, crf=0)


def test_driving_video_keypoints_are_sampled_at_the_model_rate(tmp_path):
    path = write_grey_video(tmp_path / "drive.mp4", 12, 20)
    analyzer = StubAnalyzer(lambda image: [FaceInfo((0, 0, 9, 9), 0.8, five(frame_keypoints(grey_index(image))))])
    progress = []
    got = fks.keypoints_from_video(path, analyzer, size=64, fps=30.0, on_frame=progress.append)
    # output frame k shows source frame round(k * 20 / 30) while there is one
    shown = [round(k * 20 / 30) for k in range(100) if round(k * 20 / 30) < 12]
    assert len(got) == len(shown) == 18 and got.fps == 30.0 and got.frame_size == 64
    np.testing.assert_array_equal(got.frames.numpy(), np.stack([frame_keypoints(i) for i in shown]))
    assert len(analyzer.seen) == 12 and all(image.shape == (64, 64, 3) for image in analyzer.seen)  # each once
    assert progress[-1] == 18 and progress == sorted(progress)
    assert got.source == "driving video drive.mp4"


def test_driving_video_frames_without_exactly_one_face_are_named(tmp_path):
    path = write_grey_video(tmp_path / "drive.mp4", 8, 10)

    def faces(image):
        index = grey_index(image)
        one = FaceInfo((0, 0, 9, 9), 0.8, five(frame_keypoints(index)))
        return [one, one] if index == 5 else [one]
    with pytest.raises(PoseError, match=r"frame 5 \(at 0.50 s\) shows 2 faces.*exactly one face"):
        fks.keypoints_from_video(path, StubAnalyzer(faces), size=32, fps=10.0)
    with pytest.raises(PoseError, match="frame 0 .* shows no face"):
        fks.keypoints_from_video(path, StubAnalyzer(lambda image: []), size=32, fps=10.0)
    (tmp_path / "not.mp4").write_bytes(b"no video here")
    with pytest.raises(PoseError, match="cannot be read as a video"):
        fks.keypoints_from_video(tmp_path / "not.mp4", StubAnalyzer(lambda image: []))
