"""Downloads started from inside ComfyUI: "download: hallo (~5.8 GB)" entries in the model lists.

Picking such an entry and queueing the workflow is the request: the node fetches the family's files
into the pack's model folder (the first `emo` folder: models/emo, or the one extra_model_paths.yaml
names), with ComfyUI's progress bar, and Cancel stops it between blocks (nothing is placed until every
file is whole; the next run continues where it stopped). Once the files are there the same entry
just loads them: no request goes out again. Nothing is fetched at start-up or by any other node.
"""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.model_management as mm
import comfy.utils
import folder_paths

from ..emo_pipeline.download import DOWNLOADS, Download, download, human_size, missing_files
from ..emo_pipeline.download.catalogue import HubFile
from .notify import notify

PREFIX = "download: "
BUNDLED = Path(__file__).resolve().parents[1] / "models"  # the demo model that ships with the pack
log = logging.getLogger(__name__)


def entry(name: str) -> str:
    d = DOWNLOADS[name]
    return f"{PREFIX}{name} (~{human_size(d.approx_bytes)})"


def requested(choice: str) -> Download | None:
    """The download a list entry asks for (by its name, whatever size an older label gave)."""
    if not choice.startswith(PREFIX):
        return None
    return DOWNLOADS.get(choice[len(PREFIX):].split(" ", 1)[0])


def target_folder(folder: str = "emo") -> Path:
    """Where downloads go: the first configured `emo` folder that is not the pack's own bundled models."""
    for path in folder_paths.get_folder_paths(folder):
        if Path(path).resolve() != BUNDLED.resolve():
            return Path(path)
    return Path(folder_paths.models_dir) / folder


def choices(names: tuple[str, ...]) -> list[str]:
    """Entries for the named downloads whose files are not all in the model folder yet."""
    folder = target_folder()
    return [entry(n) for n in names if missing_files(folder, [DOWNLOADS[n]])]


def catalogue_file(choice: str) -> tuple[Download, HubFile] | None:
    """The download a missing file of a shipped workflow comes from (e.g. hallo/net.pth → hallo; EchoMimic v2's
    converted echomimic_v2/echomimic-v2.safetensors → echomimic-v2, with its denoising UNet's hub file)."""
    for d in DOWNLOADS.values():
        for f in d.files:
            if f.target == choice and (d.model is None or choice.startswith(d.model)):
                return d, f
        if d.convert and d.converted == choice:
            return d, next(f for f in d.files if f.part == "network" and "denoising_unet" in f.path)
    return None


class ComfyProgress:
    """One ComfyUI progress bar over the whole download (in kB), and a log line per file."""

    def __init__(self, node_id: str | None = None):
        self.node_id = node_id
        self.bar = None
        self.done = 0

    def notice(self, text: str) -> None:
        """A licence said before the download: in the log, and to the person at the graph."""
        log.warning("EMO: %s", text)
        notify(text, "EMO download")

    def start(self, total_bytes: int, files: int) -> None:
        self.total = max(1, total_bytes // 1000)
        self.bar = comfy.utils.ProgressBar(self.total, node_id=self.node_id)
        log.info("EMO: fetching %d file(s), %s", files, human_size(total_bytes))

    def file(self, name: str, size: int, done: int) -> None:
        log.info("EMO: %s (%s)%s", name, human_size(size), f", resuming at {human_size(done)}" if done else "")
        self.advance(done)

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update_absolute(min(self.total, self.done // 1000), self.total)

    def finish(self) -> None:
        return None


def cancelled() -> bool:
    """Cancel in ComfyUI: raises its own interruption, which ends the run as a cancel does."""
    mm.throw_exception_if_processing_interrupted()
    return False


def fetch(d: Download, folder: Path | None = None) -> Path:
    """Fetch (or find) the download's files; returns the model path (the folder for the optional parts)."""
    folder = folder or target_folder()
    # Picking the entry asks for this download: a part there that fails its content check is replaced (the
    # loader could not use it); a working file of the user's own is left alone.
    result = download([d.name], folder, replace_damaged=True, progress=ComfyProgress(), is_cancelled=cancelled)
    if result.placed:
        log.info("EMO: %s placed in %s", d.name, folder)
    for conversion in result.conversions:  # EchoMimic v2's networks as one fp16 safetensors file each
        log.info("EMO: %s", conversion.said)
    return result.models[0] if result.models else folder  # the converted file where there is one
