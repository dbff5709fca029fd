"""EMO Video Combine: frames + audio → an H.264/AAC MP4 in ComfyUI's output folder, shown in the node."""

from __future__ import annotations

import json
import math
import os

import folder_paths
from comfy.cli_args import args

from ..emo_pipeline.io.media import VideoWriter
from .notify import relays_warnings


# the widgets of every node that writes an MP4
SAVE_INPUTS = {
    "filename_prefix": ("STRING", {"default": "EMO/emo"}),
    "crf": ("INT", {"default": 19, "min": 0, "max": 51,
                    "tooltip": "H.264 quality: lower is better and larger; 17-23 is typical."}),
}


class EMOVideoCombine:
    DESCRIPTION = "Saves frames and audio as an MP4 (H.264 + AAC, no ffmpeg needed) and previews it."
    CATEGORY = "EMO"
    FUNCTION = "combine"
    OUTPUT_NODE = True
    RETURN_TYPES = ("VIDEO", "STRING")
    RETURN_NAMES = ("video", "path")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "frame_rate": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 120.0, "step": 0.01}),
                **SAVE_INPUTS,
            },
            "optional": {"audio": ("AUDIO",)},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @relays_warnings
    def combine(self, images, frame_rate, filename_prefix, crf, audio=None, prompt=None, extra_pnginfo=None):
        if images.ndim != 4 or images.shape[-1] not in (3, 4):
            raise ValueError(f"EMO Video Combine needs IMAGE frames [F, H, W, 3]; got {tuple(images.shape)}.")
        if len(images) == 0:
            raise ValueError("EMO Video Combine got no frames (an empty IMAGE batch): nothing to save.")
        if not math.isfinite(frame_rate) or frame_rate <= 0:
            raise ValueError(f"EMO Video Combine's frame_rate must be a positive number, not {frame_rate}: connect "
                             "EMO Encode Audio's fps output or type the rate.")
        images = images[..., :3]
        height, width = images.shape[1:3]
        with open_video(filename_prefix, frame_rate, width, height, crf, audio, prompt, extra_pnginfo) as writer:
            for start in range(0, len(images), 64):
                writer.write(images[start: start + 64])
        return saved_video(writer.path)


def open_video(filename_prefix: str, frame_rate: float, width: int, height: int, crf: int, audio=None, prompt=None,
               extra_pnginfo=None) -> VideoWriter:
    """A writer for the next free `<prefix>_NNNNN_.mp4` in ComfyUI's output folder, with the workflow in its
    metadata and the AUDIO (if any) as its sound track; the file appears only once it is closed."""
    output_dir = folder_paths.get_output_directory()
    folder, name, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, output_dir, width, height)
    # core refuses prefixes that leave the output folder; checked here too, so no core change can let one through
    if os.path.commonpath((os.path.abspath(output_dir), os.path.abspath(folder))) != os.path.abspath(output_dir):
        raise ValueError(f"filename_prefix {filename_prefix!r} points outside the output folder.")
    os.makedirs(folder, exist_ok=True)
    metadata = {}
    if not args.disable_metadata:
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        for key, value in (extra_pnginfo or {}).items():
            metadata[key] = json.dumps(value)
    sound = None
    if audio is not None:
        waveform = audio["waveform"]
        sound = (waveform[0] if waveform.ndim == 3 else waveform, int(audio["sample_rate"]))
    path = os.path.join(folder, f"{name}_{counter:05}_.mp4")
    return VideoWriter(path, frame_rate, width, height, audio=sound, crf=crf, metadata=metadata)


def saved_video(path) -> dict:
    """The node's answer for a written MP4: its preview in the node, and the VIDEO and path outputs."""
    output_dir = os.path.abspath(folder_paths.get_output_directory())
    subfolder, filename = os.path.split(os.path.relpath(os.path.abspath(path), output_dir))
    preview = {"filename": filename, "subfolder": subfolder, "type": "output"}
    return {"ui": {"images": [preview], "animated": (True,)}, "result": (_video(str(path)), str(path))}


def _video(path: str):
    try:
        from comfy_api.input_impl import VideoFromFile
    except ImportError:  # ComfyUI before 0.3.31 has no VIDEO type
        return path
    return VideoFromFile(path)
