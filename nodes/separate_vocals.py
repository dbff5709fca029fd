"""EMO Separate Vocals: AUDIO → the voice alone (Kim_Vocal_2.onnx, as Hallo runs before wav2vec), so
music behind a song does not drive the mouth. Feed it to EMO Encode Audio; keep the full mix for the video."""

from __future__ import annotations

import os

import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths

from ..emo_pipeline.audio.separation import MEMO_SEPARATOR_FOLDER, SEPARATOR_FILE, SEPARATOR_FOLDER, VocalSeparator
from .downloads import entry, fetch, requested, target_folder
from .model_loader import CHECKPOINTS, FOLDER, IN_CHECKPOINTS, choice_path, memo_downloads
from .notify import relays_warnings

DEFAULT = f"{SEPARATOR_FOLDER}/{SEPARATOR_FILE}"
DOWNLOAD = "separator"  # the catalogue's entry that fetches DEFAULT
_separators: dict[str, VocalSeparator] = {}


def separator_choices() -> list[str]:
    """The .onnx files in models/emo/audio_separator/ (Kim_Vocal_2.onnx first when it is there), and in the
    misc/vocal_separator/ of MEMO downloads (in models/emo, or in models/checkpoints as other MEMO packs keep
    them: those with the [checkpoints] prefix). Without Kim_Vocal_2.onnx, its download entry comes last."""
    found = set()
    for base in folder_paths.get_folder_paths(FOLDER):
        folder = os.path.join(base, SEPARATOR_FOLDER)
        if os.path.isdir(folder):
            found.update(f"{SEPARATOR_FOLDER}/{name}" for name in os.listdir(folder) if name.endswith(".onnx"))
    checkpoints = folder_paths.get_folder_paths(CHECKPOINTS) if CHECKPOINTS in folder_paths.folder_names_and_paths \
        else []
    for download in memo_downloads():
        folder = download / MEMO_SEPARATOR_FOLDER
        if folder.is_dir():
            prefix = IN_CHECKPOINTS if str(download.parent) in checkpoints else ""
            found.update(f"{prefix}{download.name}/{MEMO_SEPARATOR_FOLDER}/{name}" for name in os.listdir(folder)
                         if name.endswith(".onnx"))
    if DEFAULT in found:
        return [DEFAULT, *sorted(found - {DEFAULT})]
    return [*sorted(found), entry(DOWNLOAD)]


class EMOSeparateVocals:
    DESCRIPTION = ("Separates the voice from the music with the MDX-Net model Kim_Vocal_2.onnx (as Hallo, Hallo2 "
                   "and MEMO do before their audio encoder): connect its output to EMO Encode Audio and keep "
                   "the original audio for the video. Kim_Vocal_2.onnx (Hallo's download, "
                   "pretrained_models/audio_separator/) goes in models/emo/audio_separator/; the list's "
                   "'download: separator' entry fetches it there.")
    CATEGORY = "EMO"
    FUNCTION = "separate"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("vocals",)

    @classmethod
    def INPUT_TYPES(cls):
        choices = separator_choices()
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": "The song (any rate, mono or stereo)."}),
                "model": (choices, {"default": choices[0], "tooltip":
                          "The vocal separator: .onnx files in models/emo/audio_separator/ and in MEMO downloads' "
                          f"misc/vocal_separator/. '{entry(DOWNLOAD)}' (listed while {SEPARATOR_FILE} is absent) "
                          "fetches Hallo's into models/emo/audio_separator/ when queued, once."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model: str):
        """A saved workflow's separator that is not there says how to get it before anything runs."""
        if model in separator_choices() or requested(model) is not None:
            return True
        if model == DEFAULT:
            return (f"EMO Separate Vocals: {SEPARATOR_FILE} is not in {target_folder()}. Pick '{entry(DOWNLOAD)}' "
                    f"in the node's list to fetch it (once), or run `python -m emo_pipeline download {DOWNLOAD} "
                    f"--to {target_folder()}`.")
        return f"EMO Separate Vocals: no separator '{model}' in the model folders: pick one from the node's list."

    @relays_warnings
    def separate(self, audio, model: str):
        path = self._path(model)
        if path not in _separators:
            _separators[path] = VocalSeparator(path)
        separator = _separators[path]
        waveform, rate = audio["waveform"], int(audio["sample_rate"])
        batch = waveform if waveform.ndim == 3 else waveform[None]
        bar = comfy.utils.ProgressBar(len(batch))

        def on_chunk(done: int, total: int) -> None:  # chunks of ~6 s: the bar moves and Cancel stops here
            mm.throw_exception_if_processing_interrupted()
            bar.update_absolute(item * total + done, len(batch) * total)

        vocals = []
        for item, clip in enumerate(batch):
            vocals.append(separator.separate(clip, rate, on_chunk=on_chunk))
        return ({"waveform": torch.stack(vocals), "sample_rate": rate},)

    @staticmethod
    def _path(model: str) -> str:
        wanted = requested(model)
        if wanted is not None:  # "download: separator": fetched once, then found where it was placed
            return str(fetch(wanted) / wanted.files[0].target)
        path = choice_path(model)
        if path is None:
            folders = " or ".join(os.path.join(base, SEPARATOR_FOLDER) for base in folder_paths.get_folder_paths(FOLDER))
            raise FileNotFoundError(f"EMO Separate Vocals: {model} is not in the model folders. Put {SEPARATOR_FILE} (Hallo's "
                                    f"download, pretrained_models/audio_separator/{SEPARATOR_FILE}) in {folders}.")
        return path
