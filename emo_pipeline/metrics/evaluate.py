"""A whole video's scores: lip sync as syncnet_python's run_pipeline.py + run_syncnet.py give it (Sync-C, Sync-D and
the audio-video offset, per face track), and identity (CSIM) against a reference portrait.

The steps, and where ours differs from those scripts:
- frames: decoded with PyAV and taken at 25 fps by time (output frame k shows the source frame nearest k / 25 s,
  poses/from_video.at_rate), where run_pipeline re-encodes the video with ffmpeg at 25 fps; never held whole (the
  frames are decoded twice, once to detect and once to crop: face_tracks.face_track_crops);
- one shot: no scene detection (a generated talking-head clip has no cuts);
- faces: S3FD at scale 0.25 and confidence 0.9 on every frame, tracked and cropped at 224² with run_pipeline's own
  settings (face_tracks.py: a track needs a face in more than 100 frames, so at least 4 s of video);
- sound: the video's own audio track unless a file or waveform is given, mono 16 kHz int16 (mfcc.py); each
  track is scored on the sound of its own span, frames[0] / 25 to (frames[-1] + 1) / 25 s, as crop_video cuts it;
- per track SyncNet's evaluate() (sync_score.py). A video's Sync-C and Sync-D are the tracks' means weighted by
  their scored windows (a talking-head clip has one track); its offset is that of the track with the most windows.
  The offset is syncnet_python's AV offset in 25-fps frames: −k when the sound comes k frames after the mouth,
  +k when it comes before, 0 in sync.

CSIM: the cosine of two ArcFace embeddings, the portrait's face against each face-track frame's face, found and
embedded as the pack's FaceAnalyzer does for Hallo's identity embedding: SCRFD on the whole frame (and on the whole
portrait), its five landmarks, a similarity warp onto insightface's 112×112 ArcFace template, glintr100.onnx's raw
512-d embedding. In the portrait the largest face; in a frame the SCRFD face overlapping the S3FD track's box most
(IOU at least 0.3; frames without one are counted apart). Reported: the mean and the lowest over those frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..io.errors import NamedPlainly
from .face_tracks import FRAME_RATE, NoFaceTrackError, _iou, face_track_crops
from .mfcc import SYNCNET_RATE, mfcc as compute_mfcc, syncnet_audio
from .sync_score import SAMPLES_PER_FRAME, score
from .syncnet import VIDEO_WINDOW

METRICS_FOLDER = "metrics"  # in the model folder (ComfyUI's models/emo/metrics)
SYNCNET_FILE = "syncnet_v2.model"
S3FD_FILE = "sfd_face.pth"
IDENTITY_IOU = 0.3  # a frame's SCRFD face must overlap the S3FD track's box this much to be its face

Progress = Callable[[str, int, "int | None"], None]  # (stage, frames done, frames expected or None)


class MissingMetricModels(NamedPlainly, FileNotFoundError):
    """SyncNet's or S3FD's weights are not in the model folder; the message names `download metrics`."""


class Detector(Protocol):
    def detect_faces(self, image: np.ndarray, conf_th: float = ..., scales: Sequence[float] = ...) -> np.ndarray: ...


@dataclass
class MetricModels:
    """What scoring needs: SyncNet (syncnet_v2.model), the S3FD face detector (sfd_face.pth) and, for CSIM, the
    pack's FaceAnalyzer with SCRFD and ArcFace (None: no CSIM)."""

    syncnet: torch.nn.Module
    detector: Detector
    analyzer: Any = None

    @classmethod
    def load(cls, folders: Sequence[str | Path], device: str | torch.device = "cpu",
             identity: bool = False) -> "MetricModels":
        """SyncNet and S3FD from the first of `folders` holding them (in its metrics/ or itself); with `identity`
        the face analyzer from the same folders (its usual places: face_analysis/models/, ...)."""
        from .s3fd import load_s3fd
        from .syncnet import load_syncnet

        folders = [Path(f) for f in folders]
        syncnet, s3fd = find_metric_files(folders)
        analyzer = None
        if identity:
            from ..face import FaceAnalyzer

            analyzer = FaceAnalyzer(folders)
        return cls(load_syncnet(syncnet, device), load_s3fd(s3fd, device), analyzer)


def find_metric_files(folders: Sequence[Path]) -> tuple[Path, Path]:
    """(syncnet_v2.model, sfd_face.pth) from the first folder holding both, in metrics/ or at its top; else
    MissingMetricModels saying what is missing and the download that brings it."""
    for folder in folders:
        for place in (folder / METRICS_FOLDER, folder):
            if (place / SYNCNET_FILE).is_file() and (place / S3FD_FILE).is_file():
                return place / SYNCNET_FILE, place / S3FD_FILE
    where = folders[0] / METRICS_FOLDER if folders else Path(METRICS_FOLDER)
    missing = [name for name in (SYNCNET_FILE, S3FD_FILE) if not (where / name).is_file()]
    to = f" --to {folders[0]}" if folders else ""
    raise MissingMetricModels(
        f"Scoring lip sync needs SyncNet's and S3FD's weights, and {' and '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not in {where}. Fetch them (~145 MB) with: "
        f"python -m emo_pipeline download metrics{to}")


@dataclass
class TrackScore:
    """One face track's scores: its frames (25 fps indices, inclusive), SyncNet's windows, Sync-C, Sync-D and
    offset (see the module's note for its sign)."""

    first_frame: int
    last_frame: int
    windows: int
    offset: int
    sync_c: float
    sync_d: float


@dataclass
class VideoScores:
    """A video's scores. frames: the video's frames at 25 fps; frames_scored: frames inside a scored SyncNet window
    (windows + 4 per track); faces_lost: frames in no face track; csim / csim_min: None without a reference
    portrait; csim_frames: the track frames whose face ArcFace embedded."""

    video: str
    sync_c: float
    sync_d: float
    offset: int
    frames: int
    frames_scored: int
    faces_lost: int
    tracks: list[TrackScore] = field(default_factory=list)
    csim: float | None = None
    csim_min: float | None = None
    csim_frames: int = 0
    fps: float = float(FRAME_RATE)

    def as_dict(self) -> dict:
        return asdict(self)


def _uint8_at_rate(frames: Iterable[np.ndarray], source_fps: float) -> Iterator[np.ndarray]:
    """RGB uint8 frames at 25 fps by time, a source frame repeated where it stands for several."""
    from ..poses.from_video import at_rate

    for frame, count in at_rate(frames, source_fps, FRAME_RATE):
        for _ in range(count):
            yield frame


def video_frames(path: str | Path) -> tuple[Callable[[], Iterator[np.ndarray]], float, int]:
    """(open_frames, the video's fps, its declared frame count or 0): open_frames() decodes it again each time."""
    from ..io.media import iter_video_frames, probe_video
    from ..poses.from_video import uint8_frames

    info = probe_video(path)
    return (lambda: uint8_frames(iter_video_frames(path))), float(info["fps"]), int(info["frames"])


def tensor_frames(frames: torch.Tensor) -> Callable[[], Iterator[np.ndarray]]:
    """open_frames for frames already in memory ([T, H, W, 3] float 0..1, ComfyUI's IMAGE)."""
    from ..poses.from_video import uint8_frames

    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"Frames must be [frames, height, width, 3]; got shape {tuple(frames.shape)}.")
    return lambda: uint8_frames(frames.split(16))


def _rgb_uint8(image: str | Path | torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        return image[..., :3]
    if isinstance(image, (str, Path)):
        from ..io.media import load_image

        image = load_image(image)
    from ..portrait import as_rgb

    return (as_rgb(torch.as_tensor(image)) * 255).round().to(torch.uint8).numpy()


def reference_identity(analyzer: Any, image: str | Path | torch.Tensor | np.ndarray) -> np.ndarray:
    """The portrait's ArcFace embedding (its largest face), as Hallo's identity embedding is made."""
    if analyzer is None or getattr(analyzer, "embedder", None) is None:
        raise MissingMetricModels(
            "CSIM needs the face models (SCRFD and ArcFace's glintr100.onnx, with onnxruntime) and they were not "
            "found. Fetch them with: python -m emo_pipeline download face")
    faces = [f for f in analyzer.faces(_rgb_uint8(image)) if f.embedding is not None]
    if not faces:
        raise ValueError("CSIM cannot be computed: no face (with landmarks) was found in the reference portrait.")
    return np.asarray(faces[0].embedding, dtype=np.float64)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def read_audio(audio: str | Path | tuple[torch.Tensor | np.ndarray, int], name: str) -> np.ndarray:
    """The mono 16 kHz int16 samples SyncNet listens to, from a file (a video's own track too) or (waveform, rate)."""
    if isinstance(audio, (str, Path)):
        from ..io.media import load_audio

        path = Path(audio)
        try:
            waveform, rate = load_audio(path)
        except ValueError as err:
            if "has no audio stream" in str(err):
                raise ValueError(f"{path.name} has no audio track: give the sound it should be scored against "
                                 "(--audio FILE on the command line).") from None
            raise
    else:
        waveform, rate = audio
    return syncnet_audio(waveform, int(rate))


def evaluate_frames(open_frames: Callable[[], Iterable[np.ndarray]], source_fps: float,
                    audio: str | Path | tuple[torch.Tensor | np.ndarray, int], models: MetricModels,
                    reference: str | Path | torch.Tensor | np.ndarray | None = None,
                    on_progress: Progress | None = None, name: str = "video", expected_frames: int | None = None
                    ) -> VideoScores:
    """The scores of a video whose RGB uint8 frames `open_frames()` gives (at `source_fps`; called twice), against
    `audio`. See the module's note. Raises NoFaceTrackError when no face can be tracked."""
    samples = read_audio(audio, name)
    identity = reference_identity(models.analyzer, reference) if reference is not None else None
    total = round(expected_frames * FRAME_RATE / source_fps) if expected_frames else None
    faces: list[list[tuple[tuple[float, ...], np.ndarray]]] = []  # per 25-fps frame: SCRFD faces with embeddings
    passes, counted = [0], [0]

    def at_25() -> Iterator[np.ndarray]:
        stage = "detecting faces" if passes[0] == 0 else "cropping faces"
        passes[0] += 1
        last, found = None, []
        for index, frame in enumerate(_uint8_at_rate(open_frames(), source_fps)):
            if identity is not None and stage == "detecting faces":
                if frame is not last:  # a source frame shown twice is embedded once
                    found = [(f.box, np.asarray(f.embedding, np.float64)) for f in models.analyzer.faces(frame)
                             if f.embedding is not None]
                    last = frame
                faces.append(found)
            if stage == "detecting faces":
                counted[0] = index + 1
            yield frame
            if on_progress is not None:
                on_progress(stage, index + 1, total)

    try:
        tracks = face_track_crops(at_25, models.detector)
    except NoFaceTrackError as err:
        raise NoFaceTrackError(f"{name}: {err}") from None
    frames = counted[0]
    scored: list[TrackScore] = []
    covered: set[int] = set()
    reasons = []
    for number, track in enumerate(tracks, 1):
        first, last = int(track.frames[0]), int(track.frames[-1])
        covered.update(range(first, last + 1))
        segment = samples[first * SAMPLES_PER_FRAME:(last + 1) * SAMPLES_PER_FRAME]
        if len(segment) < (VIDEO_WINDOW + 1) * SAMPLES_PER_FRAME:
            reasons.append(f"track {number} (frames {first}-{last}) has {len(segment) / SYNCNET_RATE:.2f} s of sound")
            continue
        mfcc = np.ascontiguousarray(compute_mfcc(segment, SYNCNET_RATE).T)
        result = score(models.syncnet, track.crops, mfcc, samples=len(segment), bgr=True)
        scored.append(TrackScore(first, last, result.windows, result.offset, result.sync_c, result.sync_d))
        if on_progress is not None:
            on_progress("scoring lip sync", number, len(tracks))
    if not scored:
        raise ValueError(f"{name}: lip sync cannot be scored: the sound ends before the face tracks do "
                         f"({'; '.join(reasons)}; SyncNet needs at least {(VIDEO_WINDOW + 1) / FRAME_RATE:.2f} s).")
    windows = sum(t.windows for t in scored)
    main = max(scored, key=lambda t: t.windows)
    result = VideoScores(
        video=name, sync_c=sum(t.sync_c * t.windows for t in scored) / windows,
        sync_d=sum(t.sync_d * t.windows for t in scored) / windows, offset=main.offset, frames=frames,
        frames_scored=sum(t.windows + VIDEO_WINDOW - 1 for t in scored), faces_lost=frames - len(covered),
        tracks=scored)
    if identity is not None:
        sims = []
        for track in tracks:
            for frame, box in zip(track.frames, track.track.boxes):
                best = max(faces[int(frame)], key=lambda f: _iou(f[0], box), default=None)
                if best is not None and _iou(best[0], box) >= IDENTITY_IOU:
                    sims.append(_cosine(identity, best[1]))
        if sims:
            result.csim, result.csim_min, result.csim_frames = float(np.mean(sims)), float(np.min(sims)), len(sims)
    return result


def evaluate_video(path: str | Path, models: MetricModels,
                   audio: str | Path | tuple[torch.Tensor | np.ndarray, int] | None = None,
                   reference: str | Path | torch.Tensor | np.ndarray | None = None,
                   on_progress: Progress | None = None) -> VideoScores:
    """Sync-C, Sync-D, offset, frames scored, faces lost (and CSIM against `reference`) of the video at `path`,
    scored against its own sound unless `audio` (a file, or (waveform, sample rate)) is given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such video file: {path}")
    open_frames, fps, declared = video_frames(path)
    return evaluate_frames(open_frames, fps, path if audio is None else audio, models, reference, on_progress,
                           name=path.name, expected_frames=declared or None)
