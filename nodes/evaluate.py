"""EMO Evaluate: a video's lip sync (SyncNet's Sync-C, Sync-D and audio-video offset) and, with a portrait, identity
(ArcFace CSIM), as the field's papers score them (emo_pipeline/metrics/evaluate.py), shown on the node and given as
text. SyncNet and S3FD come from models/emo/metrics (`python -m emo_pipeline download metrics`)."""

from __future__ import annotations

from pathlib import Path

import comfy.model_management as mm
import comfy.utils
import folder_paths

from ..emo_pipeline.metrics.evaluate import MetricModels, VideoScores, evaluate_frames, tensor_frames
from .face import face_analyzer
from .model_loader import FOLDER
from .notify import relays_warnings

_models: dict[str, MetricModels] = {}  # SyncNet and S3FD, loaded once per device


def metric_models(device: str) -> MetricModels:
    if device not in _models:
        _models.clear()
        _models[device] = MetricModels.load([Path(p) for p in folder_paths.get_folder_paths(FOLDER)], device)
    return _models[device]


def scores_text(scores: VideoScores) -> str:
    """The scores in a few lines, as the node shows them."""
    lines = [f"Sync-C {scores.sync_c:.3f} (higher: better lip sync)",
             f"Sync-D {scores.sync_d:.3f} (lower: better)",
             f"offset {scores.offset:+d} frames at 25 fps (−k: the sound comes k frames late)"]
    if scores.csim is not None:
        lines.append(f"CSIM {scores.csim:.3f} (lowest {scores.csim_min:.3f}, {scores.csim_frames} frames)")
    lines += [f"frames scored {scores.frames_scored} of {scores.frames}, faces lost {scores.faces_lost}, "
              f"tracks {len(scores.tracks)}"]
    return "\n".join(lines)


class EMOEvaluate:
    DESCRIPTION = ("Scores a video as the field's papers do: lip sync by SyncNet (Sync-C, Sync-D, the audio-video "
                   "offset) on S3FD's face tracks, and with a portrait the identity kept (CSIM, ArcFace). Needs "
                   "models/emo/metrics (python -m emo_pipeline download metrics) and, for CSIM, the face models. "
                   "A face must be tracked for more than 100 frames (4 s at 25 fps).")
    CATEGORY = "EMO"
    FUNCTION = "evaluate"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("scores",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 120.0, "step": 0.001,
                                  "tooltip": "The frame rate of the frames input (a VIDEO brings its own). They are "
                                             "taken at 25 fps by time for SyncNet."}),
            },
            "optional": {
                "frames": ("IMAGE", {"tooltip": "The video's frames (e.g. EMO Sample To Video's or EMO Sampler's "
                                                "output), at fps."}),
                "video": ("VIDEO", {"tooltip": "A video instead of frames (Load Video); its own sound is used when "
                                               "no audio is connected."}),
                "audio": ("AUDIO", {"tooltip": "The sound the lips are scored against (the driving audio)."}),
                "portrait": ("IMAGE", {"tooltip": "The reference portrait: CSIM, the cosine of ArcFace embeddings of "
                                                  "its face and each tracked frame's face."}),
            },
        }

    @relays_warnings
    def evaluate(self, fps: float, frames=None, video=None, audio=None, portrait=None):
        if video is not None:
            parts = video.get_components()
            images, rate = parts.images, float(parts.frame_rate)
            audio = audio if audio is not None else parts.audio
        elif frames is not None:
            images, rate = frames, float(fps)
        else:
            raise ValueError("EMO Evaluate: neither frames nor video is connected: connect the video to score.")
        if audio is None:
            raise ValueError("EMO Evaluate: no sound to score the lips against: connect audio (the driving audio).")
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"EMO Evaluate: the frames have shape {tuple(images.shape)}, not [frames, height, "
                             "width, channels].")
        models = metric_models(str(mm.get_torch_device()))
        if portrait is not None:
            models = MetricModels(models.syncnet, models.detector, face_analyzer())
        count = max(1, round(images.shape[0] * 25 / rate))
        bar = comfy.utils.ProgressBar(2 * count + 1)
        offsets = {"detecting faces": 0, "cropping faces": count}

        def on_progress(stage: str, done: int, total) -> None:  # the bar moves and Cancel stops here
            mm.throw_exception_if_processing_interrupted()
            bar.update_absolute(min(offsets.get(stage, 2 * count) + done, 2 * count + 1), 2 * count + 1)

        waveform = audio["waveform"]
        scores = evaluate_frames(tensor_frames(images[..., :3]), rate, (waveform[0], int(audio["sample_rate"])),
                                 models, reference=portrait[:1] if portrait is not None else None,
                                 on_progress=on_progress, name="EMO Evaluate", expected_frames=images.shape[0])
        text = scores_text(scores)
        return {"ui": {"text": [text]}, "result": (text,)}
