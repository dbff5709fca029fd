"""EchoMimic v2's demo pose folders (`<folder>/0.npy … <n-1>.npy`, each a pickled 0-d object array holding one
frame's dict), read without letting a file run code; and a plain-array .npz for sequences of our own.

A pickle can call anything it names while it loads, and np.load(allow_pickle=True) would let it. So the .npy header
is read here, and the pickle goes through an Unpickler that hands out numpy's array rebuilding and nothing else:
any other global a file asks for is refused, by name, before it is ever called.
"""

from __future__ import annotations

import ast
import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..io.safe_files import real_folder, write_atomic
from .sequence import BODY_KEYPOINTS, KEYPOINTS, PoseError, PoseSequence

try:  # numpy 2's home of the array rebuilder; numpy 1 only has numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover
    from numpy.core.multiarray import _reconstruct

MAGIC = b"\x93NUMPY"
MAX_POSE_FILE = 1 << 20  # the demo's files are 4 KB: a bigger one is no pose file
MAX_NPZ = 1 << 30  # 1 GiB of arrays: an hour of poses for several people fits many times over
_POSE_NAME = re.compile(r"(0|[1-9][0-9]*)\.npy")
# The globals a pose file's pickle may name: numpy's ndarray reconstruction (numpy 1 and numpy 2 spell its module
# differently), the class and the dtype. Everything else (os.system, builtins.eval, …) is refused.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
NPZ_KEYS = ("hands", "scores", "area", "placement", "frame_size", "fps")
NPZ_OPTIONAL = ("source", "body", "body_scores")


class _ArraysOnly(pickle.Unpickler):
    """An Unpickler that builds numpy arrays and plain Python values only."""

    def __init__(self, data: bytes, path: Path):
        super().__init__(io.BytesIO(data))
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise PoseError(f"{self.path}: refused: it asks for {module}.{name}; pose files hold only arrays. "
                            "Delete this file and take pose files from a source you trust (EchoMimic v2's own demo "
                            "folders, or poses made by this pack).") from None

    def persistent_load(self, pid: Any) -> Any:
        raise PoseError(f"{self.path}: refused: it refers to an outside object; pose files hold only arrays. "
                        "Delete this file and take pose files from a source you trust.")


def _npy_header(data: bytes, path: Path) -> tuple[dict, int]:
    """The .npy header's dict and where the payload starts; a file that is no .npy gets a plain error."""
    if not data.startswith(MAGIC) or len(data) < 10:
        raise PoseError(f"{path} is not a .npy file (no NUMPY header): pose folders hold EchoMimic v2's .npy pose "
                        "files only; move other files out.")
    major = data[6]
    if major == 1:
        length, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        length, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise PoseError(f"{path}: .npy format version {major}.{data[7]} is not known: save it again with numpy "
                        "(format 1.0, as EchoMimic v2's demo files).")
    text = data[start:start + length]
    if len(text) != length:
        raise PoseError(f"{path} is cut short inside its header: copy the pose folder again.")
    try:
        header = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        header = None
    if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= header.keys():
        raise PoseError(f"{path} has a damaged .npy header: copy the pose folder again.")
    return header, start + length


def read_pose_file(path: str | Path) -> dict:
    """One demo pose file's dict: the .npy header checked (an object array of shape ()), its pickle loaded with
    numpy's array rebuilding as the only code it may name, and the dict's hand fields checked."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read(MAX_POSE_FILE + 1)
    if len(data) > MAX_POSE_FILE:
        raise PoseError(f"{path} is larger than {MAX_POSE_FILE >> 10} KB; EchoMimic v2's pose files are about 4 KB. "
                        "It is no pose file: move it out of the pose folder.")
    header, start = _npy_header(data, path)
    if header["descr"] != "|O" or header["shape"] != ():
        raise PoseError(f"{path} holds an array of {header['descr']!r} with shape {header['shape']}, not one pickled "
                        "frame ('|O', shape ()): pose folders hold EchoMimic v2's per-frame pose files; for plain "
                        "keypoint arrays use a .npz made by save_pose_npz.")
    try:
        array = _ArraysOnly(data[start:], path).load()
    except PoseError:
        raise
    except Exception as error:  # noqa: BLE001  (a cut or garbled pickle: any of pickle's own errors)
        raise PoseError(f"{path} is damaged ({type(error).__name__}: {error}): copy the pose folder again.") from None
    frame = array.item() if isinstance(array, np.ndarray) and array.shape == () and array.dtype == object else None
    return check_frame(frame, path)


def _numeric(value: Any, shape: tuple[int | None, ...]) -> bool:
    return (isinstance(value, np.ndarray) and value.dtype.kind in "fiu" and value.ndim == len(shape)
            and all(want is None or got == want for got, want in zip(value.shape, shape)))


def check_frame(frame: Any, path: str | Path) -> dict:
    """`frame` if it is a demo pose dict (hands (N, 21, 2), hands_score (N, 21), draw_pose_params of six ints),
    else a PoseError saying which part is wrong."""
    if not isinstance(frame, dict):
        raise PoseError(f"{path} holds a {type(frame).__name__}, not a pose dict: pose folders hold EchoMimic v2's "
                        "per-frame pose files only.")
    missing = [k for k in ("hands", "hands_score", "draw_pose_params") if k not in frame]
    if missing:
        raise PoseError(f"{path} has no {', '.join(missing)}: it is not an EchoMimic v2 pose file; re-extract the "
                        "poses with EchoMimic v2's pose extraction (demo.ipynb) or take a demo folder.")
    hands, scores, params = frame["hands"], frame["hands_score"], frame["draw_pose_params"]
    if not _numeric(hands, (None, KEYPOINTS, 2)):
        raise PoseError(f"{path}: 'hands' is {_described(hands)}, not numbers of shape (hands, 21, 2): re-extract "
                        "the poses.")
    if not _numeric(scores, (hands.shape[0], KEYPOINTS)):
        raise PoseError(f"{path}: 'hands_score' is {_described(scores)}, not numbers of shape ({hands.shape[0]}, "
                        "21), one per hand keypoint: re-extract the poses.")
    if (not isinstance(params, (list, tuple, np.ndarray)) or len(params) != 6
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in params)):
        raise PoseError(f"{path}: 'draw_pose_params' is {params!r}, not six whole numbers [height, width, rb, re, "
                        "cb, ce]: re-extract the poses.")
    return frame


def _described(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype} with shape {value.shape}"
    return f"a {type(value).__name__}"


def pose_file_indices(folder: Path) -> int:
    """How many frames a pose folder holds: files 0.npy … n-1.npy, none missing (other files are left alone)."""
    found = {int(m.group(1)) for p in folder.iterdir() if (m := _POSE_NAME.fullmatch(p.name))}
    if not found:
        raise PoseError(f"{folder} holds no pose files (0.npy, 1.npy, …): choose a folder of EchoMimic v2 poses, "
                        "such as assets/halfbody_demo/pose/01.")
    count = max(found) + 1
    if len(found) != count:
        first = min(set(range(count)) - found)
        raise PoseError(f"{folder} has no {first}.npy but goes on to {count - 1}.npy: pose files are numbered 0, 1, "
                        f"2, … without a gap; copy the missing file or renumber the files.")
    return count


def load_pose_folder(folder: str | Path, source: str | None = None, frame_size: int = 768,
                     fps: float = 24.0) -> PoseSequence:
    """A PoseSequence from an EchoMimic v2 pose folder, checked (validate()). Frames with fewer detected hands than
    the most are padded with missing (score 0) hands."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PoseError(f"{folder} is not a folder: give a pose folder (0.npy, 1.npy, … inside).")
    count = pose_file_indices(folder)
    frames = [read_pose_file(folder / f"{i}.npy") for i in range(count)]
    params = [tuple(int(v) for v in frame["draw_pose_params"]) for frame in frames]
    differing = [i for i, p in enumerate(params) if p != params[0]]
    if differing:
        raise PoseError(f"{folder}: frame {differing[0]} is drawn with {list(params[differing[0]])}, frame 0 with "
                        f"{list(params[0])}: one pose folder is drawn in one place; re-extract the poses as one clip.")
    most = max(frame["hands"].shape[0] for frame in frames)
    hands = np.zeros((count, most, KEYPOINTS, 2), np.float32)
    scores = np.zeros((count, most, KEYPOINTS), np.float32)
    for i, frame in enumerate(frames):
        n = frame["hands"].shape[0]
        hands[i, :n], scores[i, :n] = frame["hands"], frame["hands_score"]
    bodies = [frame_body(frame) for frame in frames]
    body = {} if any(b is None for b in bodies) else {
        "body": torch.from_numpy(np.stack([b[0] for b in bodies])),
        "body_scores": torch.from_numpy(np.stack([b[1] for b in bodies]))}
    height, width, rb, re, cb, ce = params[0]
    return PoseSequence(torch.from_numpy(hands), torch.from_numpy(scores), (height, width), (rb, re, cb, ce),
                        frame_size=frame_size, fps=fps, source=source or f"pose folder {folder.name}",
                        **body).validate()


def frame_body(frame: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The first person's 18 body keypoints and their scores of a demo frame (float32 [18, 2], [18]), or None when
    the frame has no usable body (they are optional: only fitting the hands to a photo reads them)."""
    bodies = frame.get("bodies")
    if not isinstance(bodies, dict):
        return None
    candidate, score = bodies.get("candidate"), bodies.get("score")
    if not (_numeric(candidate, (None, 2)) and isinstance(score, np.ndarray) and score.dtype.kind in "fiu"
            and score.ndim == 2 and score.shape[1] == BODY_KEYPOINTS and score.shape[0] >= 1
            and candidate.shape[0] >= BODY_KEYPOINTS):
        return None
    return (candidate[:BODY_KEYPOINTS].astype(np.float32), score[0].astype(np.float32))


def _frame_dict(seq: PoseSequence, i: int) -> dict:
    """Frame i as the reference writes it; bodies (empty when the sequence has none) and empty faces are kept
    because its drawing reads 'bodies'."""
    if seq.body is None:
        body = {"candidate": np.zeros((18, 2)), "subset": np.full((1, 18), -1.0), "score": np.zeros((1, 18))}
    else:
        score = seq.body_scores[i].double().numpy()[None]
        body = {"candidate": seq.body[i].double().numpy(), "score": score,
                "subset": np.where(score > 0.3, np.arange(18, dtype=np.float64), -1.0)}
    return {
        "bodies": body,
        "hands": seq.hands[i].double().numpy(),
        "hands_score": seq.scores[i].double().numpy(),
        "faces": np.zeros((1, 68, 2)),
        "faces_score": np.zeros((1, 68)),
        "num": i,
        "draw_pose_params": [int(seq.area[0]), int(seq.area[1]), *(int(v) for v in seq.placement)],
    }


def save_pose_folder(seq: PoseSequence, folder: str | Path) -> Path:
    """Write `seq` as an EchoMimic v2 pose folder (0.npy … n-1.npy, numpy's own pickling of a 0-d object array, as
    the reference's files). The folder is made if absent; one that already holds pose files is refused rather than
    mixed with them."""
    folder = real_folder(folder)
    if any(_POSE_NAME.fullmatch(p.name) for p in folder.iterdir()):
        raise PoseError(f"{folder} already holds pose files: choose an empty folder, or remove them first.")
    for i in range(len(seq)):
        frame = np.empty((), dtype=object)
        frame[()] = _frame_dict(seq, i)
        write_atomic(folder / f"{i}.npy", write=lambda f, frame=frame: np.save(f, frame, allow_pickle=True))
    return folder


def save_pose_npz(seq: PoseSequence, path: str | Path) -> Path:
    """Write `seq` as plain arrays (no pickle): hands, scores, area, placement, frame_size, fps, source."""
    arrays = {
        "hands": seq.hands.detach().cpu().float().numpy(),
        "scores": seq.scores.detach().cpu().float().numpy(),
        "area": np.asarray(seq.area, np.int64),
        "placement": np.asarray(seq.placement, np.int64),
        "frame_size": np.asarray(seq.frame_size, np.int64),
        "fps": np.asarray(seq.fps, np.float64),
        "source": np.asarray(seq.source),
    }
    if seq.body is not None:
        arrays |= {"body": seq.body.detach().cpu().float().numpy(),
                   "body_scores": seq.body_scores.detach().cpu().float().numpy()}
    return write_atomic(Path(path), write=lambda f: np.savez(f, **arrays))


def read_plain_npz(path: Path, required: Sequence[str], optional: Sequence[str], max_bytes: int, what: str,
                   writer: str) -> dict[str, np.ndarray]:
    """The arrays of a .npz of ours (`what`: "pose", "keypoint"; `writer`: the function that writes it), read with
    allow_pickle=False after its declared unpacked size is checked against `max_bytes`: `required` ones, and those of
    `optional` it holds. A file of object arrays, not a zip, too large or lacking a key is refused plainly."""
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as error:
        raise PoseError(f"{path} is not a {what} .npz ({error}): give a file written by {writer}.") from None
    if declared > max_bytes:
        raise PoseError(f"{path} unpacks to {declared >> 20} MB, more than {what}s need: it is no {what} .npz.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in required if k not in npz.files]
            if missing:
                raise PoseError(f"{path} has no {', '.join(missing)}: give a .npz written by {writer}.")
            return {k: npz[k] for k in (*required, *(k for k in optional if k in npz.files))}
    except PoseError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        # allow_pickle=False raises ValueError for an object array: such a file is refused, not loaded
        raise PoseError(f"{path} cannot be read as plain arrays ({error}): give a .npz written by {writer}.") from None


def load_pose_npz(path: str | Path, source: str | None = None) -> PoseSequence:
    """A PoseSequence from a .npz written by save_pose_npz, read with allow_pickle=False and checked."""
    path = Path(path)
    got = read_plain_npz(path, NPZ_KEYS, NPZ_OPTIONAL, MAX_NPZ, "pose", "save_pose_npz")
    shapes = {"area": (2,), "placement": (4,), "frame_size": (), "fps": ()}
    for key, shape in shapes.items():
        if got[key].shape != shape or got[key].dtype.kind not in ("iu" if key != "fps" else "iuf"):
            raise PoseError(f"{path}: {key!r} is {_described(got[key])}, not numbers of shape {shape}: give a .npz "
                            "written by save_pose_npz.")
    for key in ("hands", "scores", "body", "body_scores"):
        if key in got and got[key].dtype.kind not in "fiu":
            raise PoseError(f"{path}: {key!r} is {_described(got[key])}, not numbers: give a .npz written by "
                            "save_pose_npz.")
    name = source or (str(got["source"]) if "source" in got and got["source"].dtype.kind == "U" else path.name)
    return PoseSequence(torch.from_numpy(got["hands"].astype(np.float32)),
                        torch.from_numpy(got["scores"].astype(np.float32)),
                        tuple(int(v) for v in got["area"]), tuple(int(v) for v in got["placement"]),
                        frame_size=int(got["frame_size"]), fps=float(got["fps"]), source=name,
                        **{k: torch.from_numpy(got[k].astype(np.float32)) for k in ("body", "body_scores")
                           if k in got}).validate()
