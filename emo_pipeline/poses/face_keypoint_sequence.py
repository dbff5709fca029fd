"""V-Express's face keypoint sequences: three points per frame (the eye on the image's left, the eye on the image's
right, the nose tip) in pixels of the square output frame, as its inference.py builds them and its keypoint guider
reads them drawn (poses/face_keypoints.py).

Where they come from, as V-Express does it (docs/v-express-inference.md §3.1, §3.2):

* the photo's own keypoints (`reference_keypoints`): the photo resized to size×size with OpenCV's bilinear rule
  (redone bit for bit by poses/dwpose.resize_linear), SCRFD's five landmarks, the first three. SCRFD runs at
  det size = size, as V-Express's FaceAnalysis.prepare(det_size=(H, W)) does, when the model file takes any
  input size; V-Express takes faces[0], the detection SCRFD scores highest, and so does this (not the largest
  face, which is what face/analysis.FaceAnalyzer.faces lists first);
* a driving video's keypoints (`keypoints_from_video`), as its scripts/extract_kps_sequence_and_audio.py makes
  them (each frame resized to size×size, exactly one face, its first three landmarks), except that the video is
  sampled at the model's frame rate by time (poses/from_video.at_rate, as for DWPose): V-Express keeps every
  frame and shows driving frame i as output frame i, so a 25 fps video drives a 30 fps render 1.2× fast. Frames
  are decoded by PyAV (io/media.py) where V-Express's script uses OpenCV's FFmpeg: their YUV-to-RGB conversions
  may differ by a level here and there, which moves a landmark by far less than a pixel;
* V-Express's own `kps.pth` files (a torch.save'd list of numpy float32 [3, 2] arrays), read through
  poses/demo_files' array-only unpickler (no code in the file is run), and our own .npz.

Then `face_keypoints_for_video` does what inference.py:267-289 does: the driving keypoints made as long as the video
(the first L kept when longer, then a linear stretch) and one of four strategies applied: fix_face (every frame the
photo's keypoints: a still head; V-Express's default), no_retarget (the driving keypoints as they are),
offset_retarget and naive_retarget (pipelines/utils.py's retarget_kps, with its quirks kept: see `retarget`).

benchmarks/vexpress_retarget.py runs V-Express's own retarget_kps beside `retarget` (random, hand-made and its own
test_samples sequences, 156 in all, each through the four strategies) and torch.load beside `read_kps_pth` (its 27
kps.pth files): under numpy 1.26.4, V-Express's numpy, 0 px apart everywhere; under numpy 2.4 at most 1.2e-04 px
(numpy 2 squares the reference's float32 scalars in float32; ours follows numpy 1's float64), files read alike.
"""

from __future__ import annotations

import codecs
import io
import math
import pickle
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..io.advice import where
from ..io.safe_files import write_atomic
from .demo_files import _ArraysOnly, read_plain_npz
from .dwpose import resize_linear
from .face_keypoints import KEYPOINTS, LIMIT, draw_face_keypoints
from .from_video import at_rate, uint8_frames
from .sequence import EXTEND_MODES as _POSE_EXTEND_MODES
from .sequence import PoseError, _frames_named, extension_indices

STRATEGIES = ("fix_face", "no_retarget", "offset_retarget", "naive_retarget")
DEFAULT_STRATEGY = "fix_face"  # V-Express's --retarget_strategy default
# "stretch" is V-Express's own fitting (fit_length); the others repeat frames as EchoMimic v2's poses do
EXTEND_MODES = ("stretch", *_POSE_EXTEND_MODES)
FRAME_SIZE = 512  # V-Express's output size, and the size its extract script measures driving frames in
FPS = 30.0  # V-Express's --fps default
MAX_KPS_PICKLE = 128 << 20  # a kps.pth holds ~150 bytes a frame: an hour at 60 fps is ~32 MB
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.save's old (non-zip) format starts with this pickled number
NPZ_KEYS = ("frames", "frame_size", "fps")
_DET_STRIDE = 32  # SCRFD's coarsest stride: an input side must be a multiple of it


class FaceFinder(Protocol):
    """face/analysis.FaceAnalyzer, or anything with its faces(): RGB uint8 [H, W, 3] → faces with .score and
    .landmarks ([5, 2] pixels, or None when the detector gives none)."""

    def faces(self, image: np.ndarray) -> list: ...


# ---------------------------------------------------------------------------------------------- the sequence
@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value to compare by
class FaceKeypointSequence:
    """Face keypoints for every frame of a video, as V-Express draws them.

    frames: float32 [F, 3, 2], (x, y) pixels of a frame_size² frame: [0] the eye on the image's left, [1] the eye
    on the image's right, [2] the nose tip (insightface's order). fps: the frames' rate (only said in messages:
    V-Express shows keypoint frame i as video frame i)."""

    frames: torch.Tensor
    frame_size: int = FRAME_SIZE
    fps: float = FPS
    source: str = "face keypoints"

    def __len__(self) -> int:
        return int(self.frames.shape[0]) if self.frames.dim() else 0

    def validate(self) -> "FaceKeypointSequence":
        """The sequence itself, or a PoseError naming what is wrong with it and what to do."""
        where_ = self.source
        if self.frames.dim() != 3 or tuple(self.frames.shape[1:]) != (KEYPOINTS, 2):
            raise PoseError(f"{where_}: face keypoints have shape {tuple(self.frames.shape)}, not [frames, 3, 2]: "
                            "give three (x, y) points a frame (the eye on the left, the eye on the right, the nose), "
                            "as V-Express's extract_kps_sequence_and_audio.py writes them.")
        if len(self) == 0:
            raise PoseError(f"{where_}: the face keypoint sequence has no frames: give a driving video or keypoint "
                            "file with at least one frame.")
        if isinstance(self.frame_size, bool) or not isinstance(self.frame_size, int) or self.frame_size < 1:
            raise PoseError(f"{where_}: a frame of {self.frame_size!r} pixels: give the frame size the keypoints "
                            "were measured in (512 for V-Express's own files).")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise PoseError(f"{where_}: the keypoints' frame rate is {self.fps}: give a positive frame rate.")
        bad_points = ~torch.isfinite(self.frames) | (self.frames.abs() >= LIMIT)
        if bool(bad_points.any()):
            bad = torch.nonzero(bad_points.flatten(1).any(1)).flatten().tolist()
            raise PoseError(f"{where_}: frame{'s' if len(bad) > 1 else ''} {_frames_named(bad)} hold NaN, infinite "
                            "or absurdly large face keypoints: re-extract the keypoints for those frames, or cut "
                            "them out.")
        return self

    def frames_for(self, indices: Sequence[int] | torch.Tensor) -> "FaceKeypointSequence":
        """The sub-sequence of the given frames, in that order (a context window's frame indices)."""
        index = (indices.to(torch.long) if isinstance(indices, torch.Tensor)
                 else torch.tensor(list(indices), dtype=torch.long)).flatten()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise PoseError(f"{self.source}: frames {int(index.min())}..{int(index.max())} asked of a face keypoint "
                            f"sequence of {len(self)} frames: make it as long as the video first (extend_to).")
        return replace(self, frames=self.frames[index])

    def extend_to(self, frames: int, mode: str = "stretch") -> tuple["FaceKeypointSequence", str]:
        """The sequence made exactly `frames` long and the line that says how (empty when the lengths match).
        "stretch" is V-Express's rule (fit_length: the first `frames` kept when longer, then a linear stretch);
        "pingpong", "loop" and "hold" cut a longer sequence and repeat frames of a shorter one as
        PoseSequence.extend_to does."""
        if mode not in EXTEND_MODES:
            raise PoseError(f"face keypoint extension {mode!r} is not known: choose one of {', '.join(EXTEND_MODES)}.")
        if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
            raise PoseError(f"{self.source}: the face keypoints cannot be made {frames!r} frames long: the video "
                            "needs a whole number of frames, at least 1; give a longer audio clip.")
        self.validate()
        n, frames = len(self), int(frames)
        if frames == n:
            return self, ""
        if mode == "stretch":
            fitted = replace(self, frames=fit_length(self.frames, frames))
            how = f"cut to {frames}" if frames < n else f"stretched to {frames}"
        elif frames < n:
            fitted, how = self.frames_for(range(frames)), f"cut to {frames}"
        else:
            fitted = self.frames_for(extension_indices(n, frames, mode))
            how = f"extended to {frames} by " + {"pingpong": "ping-pong", "loop": "looping",
                                                 "hold": "holding the last frame"}[mode]
        return fitted, f"face keypoints: {n} frames ({self.source}) {how} for {frames / self.fps:.1f} s of video"

    def for_frame_size(self, size: int) -> "FaceKeypointSequence":
        """The same keypoints for a square frame of `size` pixels: every coordinate scaled by size / frame_size
        (V-Express itself assumes the driving video was measured at the output size)."""
        if size == self.frame_size:
            return self
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise PoseError(f"{self.source}: a frame of {size!r} pixels: give the model's frame size, a whole number.")
        scale = torch.tensor(size / self.frame_size, dtype=torch.float32)
        return replace(self, frames=self.frames * scale, frame_size=size)

    def retargeted(self, reference: np.ndarray | torch.Tensor, strategy: str = DEFAULT_STRATEGY
                   ) -> "FaceKeypointSequence":
        """The keypoints moved onto the photo's face by one of STRATEGIES (`retarget`), as long as this sequence;
        `reference`: the photo's [3, 2] keypoints in this sequence's frame."""
        frames = retarget(reference, self.frames, strategy, source=self.source)
        return replace(self, frames=torch.from_numpy(frames),
                       source=self.source if strategy == "no_retarget" else f"{self.source}, {strategy}").validate()

    def tensor_frames(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """float32 [3, len(indices), S, S] in [0, 1], RGB: each listed frame drawn as V-Express's draw_kps_image
        draws it (poses/face_keypoints.py). Only these frames are drawn, so a long video never holds every keypoint
        image at once."""
        part = self.frames_for(indices)
        size = self.frame_size
        out = torch.empty(3, len(part), size, size, dtype=torch.float32)
        # float32, as V-Express hands the drawing rows of a float32 tensor or array (its int() truncations and
        # the stick lengths depend on it)
        points = part.frames.detach().cpu().to(torch.float32).numpy()
        for i, frame in enumerate(points):
            image = torch.from_numpy(draw_face_keypoints(frame, size, size))
            out[:, i] = rearrange(image, "h w c -> c h w").float() / 255.0
        return out

    @classmethod
    def fixed(cls, reference: np.ndarray | torch.Tensor, frames: int, frame_size: int = FRAME_SIZE, fps: float = FPS,
              source: str = "the photo's face") -> "FaceKeypointSequence":
        """V-Express's fix_face: the photo's keypoints in every one of `frames` frames (a still head)."""
        ref = _reference(reference, source)
        if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
            raise PoseError(f"{source}: a keypoint sequence of {frames!r} frames: the video needs at least 1 frame.")
        return cls(torch.from_numpy(ref).expand(int(frames), KEYPOINTS, 2).clone(), frame_size, fps, source).validate()


# ------------------------------------------------------------------------------------ V-Express's arithmetic
def fit_length(keypoints: np.ndarray | torch.Tensor, frames: int) -> torch.Tensor:
    """float32 [frames, 3, 2]: inference.py:272-277: a longer sequence's first `frames` kept, then always
    F.interpolate(..., mode='linear') over time (align_corners False: the identity at equal lengths, a linear
    stretch of a shorter one)."""
    seq = torch.as_tensor(np.asarray(keypoints, np.float32) if not isinstance(keypoints, torch.Tensor)
                          else keypoints).to(torch.float32)
    if seq.dim() != 3 or tuple(seq.shape[1:]) != (KEYPOINTS, 2) or len(seq) == 0:
        raise PoseError(f"face keypoints of shape {tuple(seq.shape)}: give [frames, 3, 2], at least one frame.")
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise PoseError(f"face keypoints cannot be made {frames!r} frames long: give a whole number, at least 1.")
    seq = seq[:frames]
    stretched = F.interpolate(rearrange(seq, "n k c -> k c n"), size=int(frames), mode="linear",
                              align_corners=False)
    return rearrange(stretched, "k c n -> n k c").contiguous()


def _ratio(kps: np.ndarray) -> np.ndarray:
    """Per frame, |eye0 − nose| / (|eye1 − nose| + 1e-6) (utils.py's compute_ratio), float64."""
    return _length(kps[:, 0] - kps[:, 2]) / (_length(kps[:, 1] - kps[:, 2]) + 1e-6)


def _length(vectors: np.ndarray) -> np.ndarray:
    """Lengths of float32 (x, y) differences as V-Express's math.sqrt(dx ** 2 + dy ** 2) gives them under numpy 1
    (its pinned torch 2.0.1 needs numpy 1): numpy 1 squares a float32 scalar in float64."""
    wide = vectors.astype(np.float64)
    return np.sqrt(wide[..., 0] * wide[..., 0] + wide[..., 1] * wide[..., 1])


def _nose_to_eye_line(kps: np.ndarray) -> np.float32:
    """The nose's distance from the segment between the eyes (utils.py's point_to_line_dist), in float32 as the
    reference computes it (float32 arrays throughout; the projection clamped to the segment)."""
    a, b, c = kps[0], kps[1], kps[2]
    along = b - a
    norm = np.sqrt(np.sum(along ** 2))  # float32
    t = np.dot(along / norm, (c - a) * 1.0 / norm)  # the same float32 dot product (numpy's BLAS) as the reference
    t = 0.0 if t < 0.0 else 1.0 if t > 1.0 else t
    return np.sqrt(np.sum((c - (a + t * along)) ** 2))


def retarget(reference: np.ndarray | torch.Tensor, driving: np.ndarray | torch.Tensor, strategy: str,
             source: str = "face keypoints") -> np.ndarray:
    """float32 [F, 3, 2]: the driving keypoints [F, 3, 2] put on the photo's face ([3, 2], same frame) by one of
    STRATEGIES, as inference.py:279-289 and pipelines/utils.py's retarget_kps write them:

    fix_face: the photo's keypoints in every frame; no_retarget: the driving keypoints unchanged;
    offset_retarget: the photo's keypoints moved by *minus half* the nose's (scaled) movement since frame 0;
    naive_retarget: the driving keypoints, scaled, shifted so that frame 0's nose lies on the photo's nose.

    The scale: horizontally the photo's eye-to-eye distance over that of one "closest" driving frame, vertically the
    nose-to-eye-line distances' ratio, applied to absolute pixel coordinates."""
    if strategy not in STRATEGIES:
        raise PoseError(f"retarget strategy {strategy!r} is not known: choose one of {', '.join(STRATEGIES)} "
                        f"({DEFAULT_STRATEGY} is V-Express's default).")
    ref = _reference(reference, "the photo's keypoints")
    seq = np.array(driving.detach().cpu().numpy() if isinstance(driving, torch.Tensor) else driving, np.float32)
    if seq.ndim != 3 or seq.shape[1:] != (KEYPOINTS, 2) or len(seq) == 0:
        raise PoseError(f"{source}: driving keypoints of shape {seq.shape}: give [frames, 3, 2], at least one frame.")
    if strategy == "fix_face":
        return np.repeat(ref[None], len(seq), axis=0)
    if strategy == "no_retarget":
        return seq
    ref_ratio = float(_ratio(ref[None])[0])
    chosen, delta = None, 10000.0
    for index, ratio in enumerate(_ratio(seq).tolist()):
        if math.fabs(ratio - ref_ratio) < delta:
            # V-Express's own "closest" frame (utils.py:151-157) keeps the frame's *ratio* as the bar to beat, not
            # its difference from the photo's: kept as written, so that the same frame is chosen.
            chosen, delta = index, ratio
    if chosen is None:
        raise PoseError(f"{source}: no driving frame could be compared with the photo's face (its nose lies on an "
                        "eye, or the keypoints are broken): use fix_face or no_retarget, or another photo.")
    ref_eyes, ref_nose = float(_length(ref[0] - ref[1])), _nose_to_eye_line(ref)
    tgt_eyes, tgt_nose = float(_length(seq[chosen, 0] - seq[chosen, 1])), _nose_to_eye_line(seq[chosen])
    if tgt_eyes == 0.0 or tgt_nose == 0.0:
        raise PoseError(f"{source}: driving frame {chosen}, the one {strategy} measures the face on, has "
                        f"{'both eyes on one point' if tgt_eyes == 0.0 else 'its nose on the line between the eyes'}, "
                        "so the face cannot be scaled to the photo: use fix_face or no_retarget, or re-extract the "
                        "driving keypoints.")
    scaled = seq.copy()
    # Python float and numpy float32 scales: numpy multiplies the float32 coordinates in float32 either way
    scaled[:, :, 0] *= ref_eyes / tgt_eyes
    scaled[:, :, 1] *= ref_nose / tgt_nose
    if strategy == "offset_retarget":
        # utils.py:168-174 subtracts half the nose's movement: the head moves against the video, at half its size
        moved = scaled[:, 2:3, :] - scaled[0, 2, :]
        return np.repeat(ref[None], len(seq), axis=0) - moved / 2.0
    return scaled - (scaled[0, 2, :] - ref[2])


def _reference(reference: np.ndarray | torch.Tensor, source: str) -> np.ndarray:
    ref = np.array(reference.detach().cpu().numpy() if isinstance(reference, torch.Tensor) else reference, np.float32)
    if ref.shape != (KEYPOINTS, 2) or not np.isfinite(ref).all():
        raise PoseError(f"{source}: {ref.shape} keypoints{'' if np.isfinite(ref).all() else ' with NaN in them'}, "
                        "not three finite (x, y) points (the eye on the left, the eye on the right, the nose).")
    return ref


def face_keypoints_for_video(reference: np.ndarray | torch.Tensor, frames: int, strategy: str = DEFAULT_STRATEGY,
                             driving: FaceKeypointSequence | None = None, frame_size: int = FRAME_SIZE,
                             fps: float = FPS) -> tuple[FaceKeypointSequence, str]:
    """The keypoints a render of `frames` frames draws, and the line that says where they come from: inference.py's
    path (:267-289): the driving keypoints (measured in their own frame size, scaled to `frame_size`) made `frames`
    long by fit_length, then `strategy` applied with the photo's `reference` keypoints. fix_face needs no driving
    keypoints (V-Express loads and discards them)."""
    if strategy not in STRATEGIES:
        raise PoseError(f"retarget strategy {strategy!r} is not known: choose one of {', '.join(STRATEGIES)}.")
    if strategy == "fix_face":
        return (FaceKeypointSequence.fixed(reference, frames, frame_size, fps),
                "face keypoints: the photo's own in every frame (fix_face: the head stays still)")
    if driving is None:
        raise PoseError(f"{strategy} moves the head as a driving video does, and none was given: give a driving "
                        "video or a keypoint file (kps.pth or .npz), or choose fix_face.")
    fitted, line = driving.validate().for_frame_size(frame_size).extend_to(frames, "stretch")
    result = replace(fitted, fps=fps).retargeted(reference, strategy)
    if not line:
        line = f"face keypoints: {len(result)} frames ({driving.source})"
    return result, f"{line}, {strategy}"


# ------------------------------------------------------------------------------------------ face detection
def _landmark_finder(analyzer: FaceFinder, size: int) -> Callable[[np.ndarray], list[tuple[float, np.ndarray]]]:
    """image → [(score, [5, 2] landmarks)] in the detector's order. With the pack's FaceAnalyzer, its SCRFD is run
    directly (no identity embedding, which V-Express's keypoints do not use), at det size = `size` as V-Express's
    FaceAnalysis.prepare(det_size=(H, W)) when the model file takes any input size."""
    # face/ lies above poses/ in docs/architecture.md's order, so its SCRFD is known by its shape, not imported
    detector = getattr(analyzer, "detector", None)
    if detector is not None and callable(getattr(detector, "detect", None)):
        session = getattr(detector, "session", None)
        shape = list(session.get_inputs()[0].shape) if session is not None else []
        if (len(shape) == 4 and size != detector.size and size % _DET_STRIDE == 0
                and not all(isinstance(v, int) for v in shape[2:])):
            detector = type(detector)(session, size=size, score_threshold=detector.score_threshold,
                                      nms_threshold=detector.nms_threshold)

        def find(image: np.ndarray) -> list[tuple[float, np.ndarray]]:
            _, scores, landmarks = detector.detect(image)
            return [(float(s), np.asarray(k, np.float32)) for s, k in zip(scores, landmarks)]
        return find
    if getattr(analyzer, "uses_onnx", True) is False:
        raise PoseError(_no_landmarks())

    def find_faces(image: np.ndarray) -> list[tuple[float, np.ndarray]]:
        found = []
        for face in analyzer.faces(image):
            if face.landmarks is None:
                raise PoseError(_no_landmarks())
            found.append((float(face.score), np.asarray(face.landmarks, np.float32)))
        return found
    return find_faces


def _no_landmarks() -> str:
    return ("V-Express's face keypoints are SCRFD's landmarks, and no SCRFD face model (scrfd_10g_bnkps.onnx or "
            "buffalo_l's det_10g.onnx) with onnxruntime is there to give them (the built-in detector finds boxes "
            "only). Fix: " + where("run your model's 'download: ...' entry in Load EMO Model (it fetches the face "
                                   "models), and pip install onnxruntime if it is missing",
                                   "python -m emo_pipeline download face --to <your model folder>, and pip install "
                                   "onnxruntime if it is missing"))


def _square(image: np.ndarray, size: int, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise PoseError(f"{what}: an image of {image.dtype} {image.shape}, not uint8 [height, width, 3] RGB: give an "
                        "RGB picture.")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise PoseError(f"{what}: a frame of {size!r} pixels: give the model's frame size, a whole number.")
    return image if image.shape[:2] == (size, size) else resize_linear(image, size, size)


def reference_keypoints(photo: np.ndarray, size: int, analyzer: FaceFinder) -> np.ndarray:
    """float32 [3, 2]: the photo's eye on the left, eye on the right and nose tip in pixels of a size×size frame,
    as inference.py:238-240 finds them: the photo (RGB uint8 [H, W, 3]) resized to size×size (cv2.resize's
    bilinear rule), SCRFD's landmarks of the face it scores highest, the first three."""
    image = _square(photo, size, "the reference photo")
    found = _landmark_finder(analyzer, size)(image)
    if not found:
        raise PoseError("no face is found in the reference photo, and V-Express places its face keypoints from it: "
                        "use a photo with one face clearly in view, facing the camera, not too small in the frame.")
    best = max(range(len(found)), key=lambda i: found[i][0])  # the first of equal scores, as the detector lists them
    return found[best][1][:KEYPOINTS].astype(np.float32)


def keypoints_from_frames(frames: Iterable[np.ndarray], source_fps: float, analyzer: FaceFinder,
                          size: int = FRAME_SIZE, fps: float = FPS, source: str = "driving video",
                          on_frame: Callable[[int], None] | None = None) -> FaceKeypointSequence:
    """A driving video's keypoints (frames: RGB uint8 [H, W, 3], decoded as they come) at `fps`, as V-Express's
    extract script measures them: each frame used resized to size×size, exactly one face, its first three
    landmarks. A frame is measured once however many output frames show it; on_frame(output frames so far) after
    each (a progress bar, and a cancel point)."""
    find = _landmark_finder(analyzer, size)
    points: list[np.ndarray] = []
    for (index, frame), count in at_rate(enumerate(frames), source_fps, fps):
        found = find(_square(frame, size, f"{source}, frame {index}"))
        if len(found) != 1:
            seen = "no face" if not found else f"{len(found)} faces"
            raise PoseError(f"{source}: frame {index} (at {index / source_fps:.2f} s) shows {seen}; V-Express's "
                            "keypoints follow exactly one face in every frame: use a clip of one person whose face "
                            "stays in view, or cut the video before this frame.")
        points += [found[0][1][:KEYPOINTS]] * count
        if on_frame is not None:
            on_frame(len(points))
    if not points:
        raise PoseError(f"{source} has no frames: give a video with at least one frame.")
    return FaceKeypointSequence(torch.from_numpy(np.stack(points).astype(np.float32)), size, fps, source).validate()


def keypoints_from_video(path: str | Path, analyzer: FaceFinder, size: int = FRAME_SIZE, fps: float = FPS,
                         on_frame: Callable[[int], None] | None = None) -> FaceKeypointSequence:
    """The keypoints of the driving video at `path`, read with PyAV (io/media.py), at `fps`: see
    keypoints_from_frames."""
    from ..io.media import iter_video_frames, probe_video

    try:
        info = probe_video(path)
    except Exception as error:  # noqa: BLE001 - PyAV says unreadable files in many ways
        raise PoseError(f"{path} cannot be read as a video ({error}): give a video file (MP4, MOV, WebM, …) of the "
                        "face whose movements the portrait is to follow.") from None
    return keypoints_from_frames(uint8_frames(iter_video_frames(path)), info["fps"], analyzer, size, fps,
                                 f"driving video {Path(path).name}", on_frame)


# ------------------------------------------------------------------------------------------------- files
def _latin1_bytes(text: Any, encoding: Any = "utf-8") -> bytes:
    """_codecs.encode as protocol-2 pickles use it (bytes written as latin-1 text), and nothing else."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not bytes as pickle "
                                     "writes them")
    return codecs.encode(text, "latin1")


class _KpsUnpickler(_ArraysOnly):
    """demo_files' array-only unpickler (numpy's array rebuilding and nothing else), with the one more global a
    torch.save'd list of arrays names: _codecs.encode, which protocol 2 uses to write bytes."""

    def __init__(self, stream: io.BytesIO, path: Path):
        pickle.Unpickler.__init__(self, stream)  # a stream, not bytes: torch's legacy format holds several pickles
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        try:
            return super().find_class(module, name)
        except PoseError:
            if module.split(".")[0] == "torch":  # a list of tensors, not of arrays: harmless, but not read
                raise PoseError(f"{self.path} holds torch tensors (it asks for {module}.{name}), not the numpy arrays "
                                "V-Express's extract script writes; nothing in it was run. Save the keypoints as a "
                                "list of numpy [3, 2] arrays, or as a .npz (save_face_keypoints_npz).") from None
            raise PoseError(f"{self.path}: refused: it asks for {module}.{name}; V-Express's keypoint files hold only "
                            "numpy arrays, and nothing in this one was run. Delete it and take keypoint files from a "
                            "source you trust (V-Express's test_samples, or keypoints made by this pack).") from None

    def persistent_load(self, pid: Any) -> Any:
        raise PoseError(f"{self.path} holds torch tensors, not the numpy arrays V-Express's extract script writes: "
                        "save the keypoints as a list of numpy [3, 2] arrays, or as a .npz (save_face_keypoints_npz).")


def _kps_pickle(path: Path) -> Any:
    """The object a torch.save'd file holds (zip or legacy format, or a plain pickle), unpickled array-only."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [info for info in archive.infolist() if info.filename.endswith("data.pkl")]
                if len(names) != 1:
                    raise PoseError(f"{path} is a zip file without torch.save's one data.pkl: give V-Express's kps.pth "
                                    "or a keypoint .npz.")
                if names[0].file_size > MAX_KPS_PICKLE:
                    raise PoseError(f"{path} holds {names[0].file_size >> 20} MB of pickle, more than keypoints need: "
                                    "it is no keypoint file.")
                data = archive.read(names[0])
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_KPS_PICKLE + 1)
            if len(data) > MAX_KPS_PICKLE:
                raise PoseError(f"{path} is larger than {MAX_KPS_PICKLE >> 20} MB: it is no keypoint file.")
        stream = io.BytesIO(data)  # one stream: torch's legacy format is several pickles one after another
        loaded = _KpsUnpickler(stream, path).load()
        if isinstance(loaded, int) and not isinstance(loaded, bool) and loaded == TORCH_LEGACY_MAGIC:
            for _ in range(3):  # the protocol version, the system info, then the object itself
                loaded = _KpsUnpickler(stream, path).load()
        return loaded
    except PoseError:
        raise
    except (OSError, zipfile.BadZipFile) as error:
        raise PoseError(f"{path} cannot be read ({error}): give V-Express's kps.pth or a keypoint .npz.") from None
    except Exception as error:  # noqa: BLE001  (a cut or garbled pickle: any of pickle's own errors)
        raise PoseError(f"{path} is damaged or no keypoint file ({type(error).__name__}: {error}): give V-Express's "
                        "kps.pth (a list of numpy arrays saved by torch.save) or a keypoint .npz.") from None


def read_kps_pth(path: str | Path) -> np.ndarray:
    """float32 [n, 3, 2] from V-Express's kps.pth (what its inference.py makes of the file, unpickled without restriction),
    read without running the file: only numpy's array rebuilding may be named by its pickle."""
    path = Path(path)
    loaded = _kps_pickle(path)
    if isinstance(loaded, np.ndarray) and loaded.dtype != object:
        frames = [loaded[i] for i in range(len(loaded))] if loaded.ndim == 3 else [loaded]
    elif isinstance(loaded, (list, tuple)):
        frames = list(loaded)
    else:
        raise PoseError(f"{path} holds {_described(loaded)}, not a list of keypoint arrays: give V-Express's kps.pth "
                        "(made by its extract_kps_sequence_and_audio.py) or a keypoint .npz.")
    if not frames:
        raise PoseError(f"{path} holds no frames: extract the keypoints of a video with at least one frame.")
    wrong = [i for i, f in enumerate(frames)
             if not (isinstance(f, np.ndarray) and f.dtype.kind in "fiu" and f.shape == (KEYPOINTS, 2))]
    if wrong:
        more = f", and {len(wrong) - 1} more frames are wrong" if len(wrong) > 1 else ""
        raise PoseError(f"{path}: frame {wrong[0]} is {_described(frames[wrong[0]])}, not three (x, y) points "
                        f"(numbers of shape (3, 2)){more}: re-extract the keypoints with V-Express's "
                        "extract_kps_sequence_and_audio.py.")
    stacked = np.stack(frames).astype(np.float32)
    bad = np.nonzero(~np.isfinite(stacked).reshape(len(stacked), -1).all(1))[0].tolist()
    if bad:
        raise PoseError(f"{path}: frame{'s' if len(bad) > 1 else ''} {_frames_named(bad)} hold NaN or infinite "
                        "keypoints: re-extract the keypoints for those frames, or cut them out.")
    return stacked


def _described(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype} with shape {value.shape}"
    return f"a {type(value).__name__}"


def load_kps_pth(path: str | Path, frame_size: int = FRAME_SIZE, fps: float = FPS,
                 source: str | None = None) -> FaceKeypointSequence:
    """A FaceKeypointSequence from V-Express's kps.pth, checked. The file does not say the frame size its pixels
    are in: V-Express's extract script measures at 512 (its default), which `frame_size` assumes."""
    frames = read_kps_pth(path)
    return FaceKeypointSequence(torch.from_numpy(frames), frame_size, fps, source or f"keypoint file {Path(path).name}"
                                ).validate()


def save_face_keypoints_npz(seq: FaceKeypointSequence, path: str | Path) -> Path:
    """Write `seq` as plain arrays (no pickle): frames, frame_size, fps, source."""
    arrays = {"frames": seq.frames.detach().cpu().to(torch.float32).numpy(),
              "frame_size": np.asarray(seq.frame_size, np.int64), "fps": np.asarray(seq.fps, np.float64),
              "source": np.asarray(seq.source)}
    return write_atomic(Path(path), write=lambda f: np.savez(f, **arrays))


def load_face_keypoints_npz(path: str | Path, source: str | None = None) -> FaceKeypointSequence:
    """A FaceKeypointSequence from a .npz written by save_face_keypoints_npz, read with allow_pickle=False, checked."""
    path = Path(path)
    got = read_plain_npz(path, NPZ_KEYS, ("source",), MAX_KPS_PICKLE, "keypoint", "save_face_keypoints_npz")
    for key, kinds in (("frames", "fiu"), ("frame_size", "iu"), ("fps", "fiu")):
        if got[key].dtype.kind not in kinds or (key != "frames" and got[key].shape != ()):
            wanted = "numbers" if key == "frames" else "one number"
            raise PoseError(f"{path}: {key!r} is {_described(got[key])}, not {wanted}: "
                            "give a .npz written by save_face_keypoints_npz.")
    name = source or (str(got["source"]) if "source" in got and got["source"].dtype.kind == "U" else path.name)
    return FaceKeypointSequence(torch.from_numpy(got["frames"].astype(np.float32)), int(got["frame_size"]),
                                float(got["fps"]), name).validate()


def load_face_keypoints(path: str | Path, frame_size: int = FRAME_SIZE, fps: float = FPS) -> FaceKeypointSequence:
    """A keypoint file by its kind: our .npz (which says its own frame size and rate), else V-Express's torch.save'd
    kps.pth (`frame_size` and `fps` say what it was measured at)."""
    path = Path(path)
    if not path.is_file():
        raise PoseError(f"{path} is not a file: give V-Express's kps.pth or a keypoint .npz.")
    if path.suffix.lower() == ".npz":
        return load_face_keypoints_npz(path)
    return load_kps_pth(path, frame_size, fps)
