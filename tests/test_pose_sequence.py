"""EchoMimic v2's hand-pose sequence: stretched to the audio (ping-pong, loop, hold, cut), checked with plain
messages, read from the reference's pickled demo pose files without running what a hostile file asks for, converted
from ComfyUI's POSE_KEYPOINT, aligned, and drawn into the square frame a window at a time.
Everything here is made by the tests: synthetic sequences, and pose files written into tmp_path."""

from __future__ import annotations

import itertools
import pickle
import pickletools

import numpy as np
import pytest
import torch

from emo_pipeline.poses.demo_files import (load_pose_folder, load_pose_npz, read_pose_file, save_pose_folder,
                                           save_pose_npz)
from emo_pipeline.poses.keypoints import fit_in_square, from_pose_keypoint
from emo_pipeline.poses.sequence import PoseError, PoseSequence


def make_sequence(frames: int = 14, hands: int = 2, fps: float = 24.0, source: str = "test") -> PoseSequence:
    """Hands whose first point's x tells the frame: 0.1 + frame / 1000 (every point inside the area)."""
    x = torch.linspace(0.2, 0.8, 21)
    points = torch.stack([x, x.flip(0)], dim=-1).expand(frames, hands, 21, 2).clone()
    points[:, :, 0, 0] = 0.1 + torch.arange(frames, dtype=torch.float32)[:, None] / 1000
    scores = torch.full((frames, hands, 21), 0.9)
    return PoseSequence(points, scores, (768, 768), (0, 768, 0, 768), fps=fps, source=source)


def frame_ids(seq: PoseSequence) -> list[int]:
    return [round((float(v) - 0.1) * 1000) for v in seq.hands[:, 0, 0, 0]]


# --- extending to the audio's length -----------------------------------------------------------------------------

def test_pingpong_runs_forward_and_back_without_repeating_the_end_frames():
    seq, said = make_sequence(14).extend_to(40, "pingpong")
    forward_and_back = list(range(14)) + list(range(12, 0, -1))  # 0..13, 12..1: one period of 26
    assert frame_ids(seq) == list(itertools.islice(itertools.cycle(forward_and_back), 40))
    assert frame_ids(seq)[12:16] == [12, 13, 12, 11] and frame_ids(seq)[25:28] == [1, 0, 1]
    assert said == "poses: 14 frames (test) extended to 40 by ping-pong for 1.7 s of audio"


def test_loop_and_hold():
    looped, said = make_sequence(14).extend_to(40, "loop")
    assert frame_ids(looped) == [i % 14 for i in range(40)]
    assert "by looping" in said
    held, said = make_sequence(14).extend_to(40, "hold")
    assert frame_ids(held) == list(range(14)) + [13] * 26
    assert "by holding the last pose" in said


def test_a_longer_sequence_is_cut_and_an_equal_one_says_nothing():
    seq = make_sequence(14)
    cut, said = seq.extend_to(10)
    assert frame_ids(cut) == list(range(10)) and said == "poses: 14 frames (test) cut to 10 for 0.4 s of audio"
    same, said = seq.extend_to(14, "loop")
    assert same is seq and said == ""


def test_a_14_s_demo_is_ping_ponged_to_40_s_of_audio_one_pose_per_frame():
    seq = make_sequence(336, source="demo 01")  # 14 s at 24 fps
    long, said = seq.extend_to(960)  # 40 s of audio at 24 fps
    assert said == "poses: 336 frames (demo 01) extended to 960 by ping-pong for 40.0 s of audio"
    ids = frame_ids(long)
    assert len(long) == 960 and long.hands.shape == (960, 2, 21, 2) and long.scores.shape == (960, 2, 21)
    assert ids[:336] == list(range(336)) and ids[336:671] == list(range(334, -1, -1)) and ids[671] == 1
    assert all(abs(a - b) == 1 for a, b in zip(ids, ids[1:]))  # every step moves one pose: no frame shown twice
    assert (long.area, long.placement, long.fps, long.source) == (seq.area, seq.placement, 24.0, "demo 01")


def test_an_unknown_mode_or_no_frames_is_refused():
    with pytest.raises(PoseError, match="choose one of pingpong, loop, hold"):
        make_sequence().extend_to(40, "bounce")
    with pytest.raises(PoseError, match="longer audio"):
        make_sequence().extend_to(0)


def test_frames_for_takes_a_window_s_frames_in_order():
    window = make_sequence(14).frames_for([12, 13, 0, 1])
    assert frame_ids(window) == [12, 13, 0, 1]
    assert frame_ids(make_sequence(14).frames_for(torch.tensor([5, 3]))) == [5, 3]
    with pytest.raises(PoseError, match="extend the poses"):
        make_sequence(14).frames_for([13, 14])


# --- validation --------------------------------------------------------------------------------------------------

def test_a_good_sequence_validates_and_the_error_is_named_plainly():
    seq = make_sequence()
    assert seq.validate() is seq
    assert issubclass(PoseError, ValueError) and PoseError.__module__ == "emo_portrait"


def test_no_hands_to_draw_is_refused():
    seq = make_sequence()
    silent = PoseSequence(seq.hands, torch.zeros_like(seq.scores), seq.area, seq.placement, source="demo 09")
    with pytest.raises(PoseError, match=r"demo 09: no frame has a hand to draw \(every score is 0"):
        silent.validate()
    off_canvas = PoseSequence(seq.hands + 1.5, seq.scores, seq.area, seq.placement)
    with pytest.raises(PoseError, match="no frame has a hand to draw"):
        off_canvas.validate()


def test_nan_keypoints_name_their_frames():
    seq = make_sequence()
    hands, scores = seq.hands.clone(), seq.scores.clone()
    hands[3, 1, 7, 0] = float("nan")
    scores[5, 0, 2] = float("inf")
    with pytest.raises(PoseError, match=r"frames 3, 5 hold NaN or infinite hand keypoints or scores: re-extract"):
        PoseSequence(hands, scores, seq.area, seq.placement).validate()


def test_a_zero_pixel_area_or_frame_is_refused():
    seq = make_sequence()
    with pytest.raises(PoseError, match=r"area of 0×768 pixels .* may be 0 pixels"):
        PoseSequence(seq.hands, seq.scores, (0, 768), (0, 0, 0, 768)).validate()
    with pytest.raises(PoseError, match="may be 0 pixels"):
        PoseSequence(seq.hands, seq.scores, seq.area, seq.placement, frame_size=0).validate()


def test_a_placement_outside_the_frame_or_of_another_size_is_refused():
    seq = make_sequence()
    with pytest.raises(PoseError, match=r"rows 0:768, columns 100:868, outside the 768² frame"):
        PoseSequence(seq.hands, seq.scores, (768, 768), (0, 768, 100, 868)).validate()
    with pytest.raises(PoseError, match=r"is 768×700 pixels but its place .* is 768×768"):
        PoseSequence(seq.hands, seq.scores, (768, 700), (0, 768, 0, 768)).validate()


def test_no_frames_is_refused():
    with pytest.raises(PoseError, match="has no frames"):
        PoseSequence(torch.zeros(0, 2, 21, 2), torch.zeros(0, 2, 21), (768, 768), (0, 768, 0, 768)).validate()


# --- EchoMimic v2's demo pose folders ----------------------------------------------------------------------------

def test_a_pose_folder_round_trips_through_numpy_s_own_pickled_files(tmp_path):
    seq = make_sequence(5)
    seq = PoseSequence(seq.hands, seq.scores * torch.linspace(0.4, 1.2, 21), (768, 500), (0, 768, 134, 634))
    save_pose_folder(seq, tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [f"{i}.npy" for i in range(5)]
    raw = (tmp_path / "mine" / "3.npy").read_bytes()
    assert raw.startswith(b"\x93NUMPY") and b"'descr': '|O'" in raw and b"'shape': ()" in raw
    frame = np.load(tmp_path / "mine" / "3.npy", allow_pickle=True)  # our own file: the reference's format
    assert frame.shape == () and frame.dtype == object and frame.item()["draw_pose_params"] == [768, 500, 0, 768,
                                                                                                134, 634]
    assert frame.item()["hands"].dtype == np.float64 and "bodies" in frame.item()  # the reference reads 'bodies'
    back = load_pose_folder(tmp_path / "mine", source="demo 01")
    assert torch.equal(back.hands, seq.hands) and torch.equal(back.scores, seq.scores)
    assert (back.area, back.placement, back.frame_size, back.fps, back.source) == ((768, 500), (0, 768, 134, 634),
                                                                                  768, 24.0, "demo 01")
    with pytest.raises(PoseError, match="already holds pose files"):
        save_pose_folder(seq, tmp_path / "mine")


def _save_frame(path, hands: int) -> None:
    frame = np.empty((), dtype=object)
    frame[()] = {"hands": np.full((hands, 21, 2), 0.5), "hands_score": np.ones((hands, 21)),
                 "draw_pose_params": [768, 768, 0, 768, 0, 768], "num": 0}
    np.save(path, frame, allow_pickle=True)


def test_frames_with_fewer_hands_are_padded_with_missing_ones(tmp_path):
    _save_frame(tmp_path / "0.npy", 2)
    _save_frame(tmp_path / "1.npy", 1)
    seq = load_pose_folder(tmp_path)
    assert seq.hands.shape == (2, 2, 21, 2) and seq.scores[1, 1].abs().sum() == 0 and seq.scores[1, 0].min() == 1
    assert seq.source == f"pose folder {tmp_path.name}"


def _npy_around(pickled: bytes) -> bytes:
    """A .npy v1.0 file of descr '|O', shape () whose payload is `pickled`, as numpy lays it out."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (), }"
    header += " " * (118 - len(header)) + "\n"  # 10 + 118 = 128: numpy aligns the payload to 64 bytes
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1") + pickled


def test_a_pose_file_whose_pickle_calls_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    # os.system("touch <marker>"), spelled as a pickle: GLOBAL 'os system', MARK, a string, TUPLE, REDUCE, STOP
    pickled = b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."
    assert ("GLOBAL", "os system") in [(op.name, arg) for op, arg, _ in pickletools.genops(pickled)]
    folder = tmp_path / "poses"
    folder.mkdir()
    (folder / "0.npy").write_bytes(_npy_around(pickled))
    with pytest.raises(PoseError, match=r"0\.npy: refused: it asks for os\.system; pose files hold only arrays"):
        load_pose_folder(folder)
    assert not marker.exists()


def test_a_hostile_global_deep_inside_the_frame_dict_is_refused_too(tmp_path):
    class Hostile:
        def __reduce__(self):
            return (open, (str(tmp_path / "written"), "w"))  # builtins.open: would create the file

    frame = np.empty((), dtype=object)
    frame[()] = {"hands": np.zeros((2, 21, 2)), "hands_score": np.ones((2, 21)), "draw_pose_params": [Hostile()]}
    (tmp_path / "0.npy").write_bytes(_npy_around(pickle.dumps(frame, protocol=3)))
    with pytest.raises(PoseError, match=r"refused: it asks for (builtins|io)\.open"):
        read_pose_file(tmp_path / "0.npy")
    assert not (tmp_path / "written").exists()


def test_a_plain_array_file_a_missing_index_or_a_wrong_dict_gets_a_plain_error(tmp_path):
    np.save(tmp_path / "0.npy", np.zeros((2, 21, 2)))
    with pytest.raises(PoseError, match=r"holds an array of '<f8' with shape \(2, 21, 2\), not one pickled frame"):
        load_pose_folder(tmp_path)
    gap = tmp_path / "gap"
    gap.mkdir()
    for i in (0, 1, 3, 4):
        _save_frame(gap / f"{i}.npy", 2)
    with pytest.raises(PoseError, match=r"has no 2\.npy but goes on to 4\.npy"):
        load_pose_folder(gap)
    odd = tmp_path / "odd"
    odd.mkdir()
    frame = np.empty((), dtype=object)
    frame[()] = {"hands": np.zeros((2, 21, 3)), "hands_score": np.ones((2, 21)), "draw_pose_params": [768] * 6}
    np.save(odd / "0.npy", frame, allow_pickle=True)
    with pytest.raises(PoseError, match=r"'hands' is an array of float64 with shape \(2, 21, 3\)"):
        load_pose_folder(odd)
    (odd / "0.npy").write_bytes(b"not numpy at all")
    with pytest.raises(PoseError, match="is not a .npy file"):
        load_pose_folder(odd)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PoseError, match="holds no pose files"):
        load_pose_folder(tmp_path / "empty")


def test_the_plain_array_npz_round_trips_and_an_object_array_is_refused(tmp_path):
    seq = make_sequence(6, source="converted")
    save_pose_npz(seq, tmp_path / "poses.npz")
    back = load_pose_npz(tmp_path / "poses.npz")
    assert torch.equal(back.hands, seq.hands) and torch.equal(back.scores, seq.scores)
    assert (back.area, back.placement, back.frame_size, back.fps, back.source) == ((768, 768), (0, 768, 0, 768),
                                                                                  768, 24.0, "converted")
    np.savez(tmp_path / "hostile.npz", hands=np.array([None], dtype=object), scores=np.zeros(1), area=np.zeros(2),
             placement=np.zeros(4), frame_size=np.array(768), fps=np.array(24.0))
    with pytest.raises(PoseError, match="cannot be read as plain arrays"):
        load_pose_npz(tmp_path / "hostile.npz")


# --- ComfyUI's POSE_KEYPOINT -------------------------------------------------------------------------------------

def _hand(x0: float, y0: float, step: float, confidence: float = 1.0) -> list[float]:
    return [v for k in range(21) for v in (x0 + k * step, y0 + k * step, confidence)]


def test_pose_keypoint_in_pixels_and_normalised_give_the_same_hands():
    width, height = 1280, 720
    pixels = [{"people": [{"pose_keypoints_2d": [640.0, 200.0, 1.0] * 18, "hand_left_keypoints_2d": _hand(300, 400, 4),
                           "hand_right_keypoints_2d": None}], "canvas_width": width, "canvas_height": height},
              {"people": [], "canvas_width": width, "canvas_height": height}]
    seq = from_pose_keypoint(pixels)
    assert seq.hands.shape == (2, 2, 21, 2)
    assert torch.allclose(seq.hands[0, 0, 3], torch.tensor([312 / 1280, 412 / 720]))
    assert seq.scores[0, 0].min() == 1 and seq.scores[0, 1].abs().sum() == 0 and seq.scores[1].abs().sum() == 0
    assert seq.area == (432, 768) and seq.placement == (168, 600, 0, 768)  # 1280×720 fitted and centred in 768²
    normalised = [{"people": [{"hand_left_keypoints_2d": [v / (width if i % 3 == 0 else height if i % 3 == 1 else 1)
                                                          for i, v in enumerate(_hand(300, 400, 4))]}],
                   "canvas_width": width, "canvas_height": height}] * 2
    again = from_pose_keypoint(normalised)
    assert torch.allclose(again.hands[0], seq.hands[0]) and again.area == seq.area


def test_pose_keypoint_orders_left_hands_then_right_hands_and_drops_undetected_points():
    person_a = {"hand_left_keypoints_2d": _hand(0.10, 0.5, 0.01), "hand_right_keypoints_2d": _hand(0.20, 0.5, 0.01)}
    person_b = {"hand_left_keypoints_2d": _hand(0.30, 0.5, 0.01), "hand_right_keypoints_2d": _hand(0.40, 0.5, 0.01)}
    person_b["hand_right_keypoints_2d"][3:6] = [0.0, 0.0, 0.0]  # point 1 not detected
    seq = from_pose_keypoint([{"people": [person_a, person_b], "canvas_width": 512, "canvas_height": 768}])
    assert [round(float(v), 2) for v in seq.hands[0, :, 0, 0]] == [0.10, 0.30, 0.20, 0.40]  # L a, L b, R a, R b
    assert seq.scores[0, 3, 1] == 0 and seq.scores[0, 3, 0] == 1
    assert seq.area == (768, 512) and seq.placement == (0, 768, 128, 640)  # a tall canvas, centred
    assert fit_in_square(768, 768, 768) == ((768, 768), (0, 768, 0, 768))


def test_pose_keypoint_without_hands_says_to_enable_hand_detection():
    body_only = [{"people": [{"pose_keypoints_2d": [100.0, 100.0, 1.0] * 18, "hand_left_keypoints_2d": None,
                              "hand_right_keypoints_2d": None}], "canvas_width": 512, "canvas_height": 512}]
    with pytest.raises(PoseError, match="detect_hand to enable"):
        from_pose_keypoint(body_only)
    with pytest.raises(PoseError, match="not a list of frames"):
        from_pose_keypoint([])
    with pytest.raises(PoseError, match="not 63 numbers"):
        from_pose_keypoint([{"people": [{"hand_left_keypoints_2d": [0.5] * 60}], "canvas_width": 9,
                             "canvas_height": 9}])


# --- alignment and drawing into the frame ------------------------------------------------------------------------

def test_aligned_scales_about_the_centre_and_offsets_only_present_points():
    seq = make_sequence(1, hands=1)
    hands, scores = seq.hands.clone(), seq.scores.clone()
    hands[0, 0, 5] = torch.tensor([0.6, 0.5])
    hands[0, 0, 6] = 0.0
    scores[0, 0, 6] = 0.0  # a missing point stays at (0, 0), undrawn
    moved = PoseSequence(hands, scores, seq.area, seq.placement).aligned(2.0, (0.1, -0.05))
    assert torch.allclose(moved.hands[0, 0, 5], torch.tensor([0.8, 0.45]))
    assert moved.hands[0, 0, 6].abs().sum() == 0
    assert torch.allclose(moved.aligned(0.5, (-0.05, 0.025)).hands[0, 0, 5], torch.tensor([0.6, 0.5]))
    with pytest.raises(PoseError, match="positive scale"):
        seq.aligned(0.0, (0.0, 0.0))


def test_tensor_frames_draws_each_frame_and_pastes_it_at_its_place():
    seq = make_sequence(3, hands=1)
    seq = PoseSequence(seq.hands, seq.scores, (4, 6), (2, 6, 1, 7), frame_size=8)
    calls = []

    def draw(hands: np.ndarray, scores: np.ndarray, height: int, width: int) -> np.ndarray:
        calls.append((hands.shape, scores.shape, height, width))
        frame = round((hands[0, 0, 0] - 0.1) * 1000)
        return np.broadcast_to(np.array([10 * frame + 5, 100, 200], np.uint8), (height, width, 3)).copy()

    out = seq.tensor_frames([2, 0], draw)
    assert out.shape == (3, 2, 8, 8) and out.dtype == torch.float32
    assert calls == [((1, 21, 2), (1, 21), 4, 6)] * 2
    for i, frame in enumerate([2, 0]):
        inside = out[:, i, 2:6, 1:7]
        assert torch.equal(inside, torch.tensor([10 * frame + 5, 100, 200]).float().div(255).view(3, 1, 1)
                           .expand(3, 4, 6))
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[2:6, 1:7] = False
    assert out[:, :, mask].abs().sum() == 0  # black outside the pose area
    with pytest.raises(PoseError, match="not uint8"):
        seq.tensor_frames([0], lambda h, s, height, width: np.zeros((height, width, 3), np.float32))
