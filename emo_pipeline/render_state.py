"""Durable progress of one render, so that a render stopped by anything (out of memory, a crash, a
reboot, Ctrl-C, Cancel) continues from its last finished clip and gives the same frames as an
uninterrupted run.

What is kept, in a folder next to the output (`state_folder`):

* `frames_NNNNN.mkv`: the frames as they went into the MP4 (after any paste-back), one lossless
  segment per clip or decode chunk (H.264 RGB at qp 0, so they decode to the very same bytes);
* `carry_NNNNN.pt`: what the sampling loop needs to go on, at full precision: motion frames or
  MEMO's temporal memory and the RNG state after a clip; for EchoMimic the whole video's latents,
  the scheduler's state and the RNG state after a denoising step;
* `manifest.json`: the inputs' and settings' fingerprint, and each file's size and sha256. It is
  replaced atomically after the files it names are written, so a kill at any moment leaves the
  previous consistent state.

The sampling loops see only a narrow interface (`restore`, `save`, `due`, `frames_done`); the code
that writes the video uses `stored_frames`, `commit`, `keep` and `finish`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch

from .io.safe_files import (NOFOLLOW, UnsafePath, ours, plain_name, private_folder, remove_file, remove_folder,
                             write_atomic)

if TYPE_CHECKING:
    from .audio.features import AudioFeatures
    from .pipeline import EMOPipeline
    from .portrait import Portrait
    from .sampling.steps import SamplingOptions

VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_CAP_BYTES = 20 * 2**30  # the most a render's state may take
RESERVE_BYTES = 512 * 2**20  # never fill the disk closer than this: the MP4 itself still has to be written
SEGMENT_CODEC = "libx264rgb"  # lossless at qp 0 on RGB: decodes to the exact bytes encoded


def state_folder(out: str | Path, name: str | None = None) -> Path:
    """Where a render's state lives: a hidden folder beside the output (`name`: the output's stem)."""
    out = Path(out)
    return out.parent / f".{name or out.stem}.emo-resume"


# ------------------------------------------------------------------ fingerprint
def _digest(*values: Any) -> str:
    """sha256 over tensors (their bytes, shape and dtype) and JSON-able values."""
    h = hashlib.sha256()
    for value in values:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"{t.dtype}{tuple(value.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def model_digest(pipe: "EMOPipeline") -> str:
    """The network and VAE by config, precision and a sample of every weight (hashing gigabytes of weights
    on every render would cost more than it saves), with the modes that change the numbers."""
    samples = []
    for module in (pipe.net, pipe.vae):
        for p in module.parameters():
            flat = p.detach().reshape(-1)
            samples.append(flat[:: max(1, flat.numel() // 16)][:16])
    return _digest(pipe.config.to_json(), str(pipe.dtype), pipe.device.type, pipe.low_vram, *samples)


def fingerprint(pipe: "EMOPipeline", portrait: "Portrait", audio: "AudioFeatures", options: "SamplingOptions",
                sound: torch.Tensor | None = None, image: torch.Tensor | None = None, **settings: Any) -> dict[str, str]:
    """What a render's frames depend on, by the names a person knows them by. `sound`: the MP4's sound track;
    `image`: a photo the frames are pasted into; `settings`: anything else of the caller's (size, crf, ...)."""
    from .sampling.presets import resolve_options

    opts = resolve_options(options, pipe.config)
    masks = [t for m in portrait.masks for t in (m.full, m.face, m.lip)]
    head_speed = opts.head_speed if not isinstance(opts.head_speed, torch.Tensor) else _digest(opts.head_speed)
    sampling = dict(cfg=opts.guidance_scale, frames_per_clip=opts.frames_per_clip, motion_frames=opts.motion_frames,
                    scheduler=opts.scheduler, guidance_interval=opts.guidance_interval,
                    cache_interval=opts.cache_interval, context_overlap=opts.context_overlap, head_speed=head_speed,
                    emotion=opts.emotion, region_weights=opts.region_weights, preset=opts.preset,
                    decode_chunk=opts.decode_chunk_size, compile=pipe.compile)
    found = {
        "audio": _digest(audio.features, audio.num_frames, audio.fps, *([sound] if sound is not None else [])),
        "image": _digest(portrait.pixels, portrait.face_region, portrait.identity, *masks, portrait.face_box,
                         *([image] if image is not None else [])),
        "seed": str(opts.seed),
        "steps": str(opts.steps),
        "model": model_digest(pipe),
        "settings": _digest(sampling, settings),
    }
    poses = opts.poses  # EchoMimic v2's hand poses, as the loop takes them (renders without poses: no entry)
    if poses is not None and hasattr(poses, "hands"):
        found["pose sequence"] = _digest(poses.hands, poses.scores, list(poses.area), list(poses.placement),
                                         poses.frame_size)
    elif poses is not None:  # V-Express's face keypoints
        found["face keypoints"] = _digest(poses.frames, poses.frame_size)
    return found


def carry_check(pipe: "EMOPipeline", audio: "AudioFeatures",
                options: "SamplingOptions") -> Callable[[dict, int], str | None]:
    """For RenderState: the render's sampling loop's view of a saved carry (does it continue exactly after the
    frames kept?)."""
    from .sampling.loops import loop_for
    from .sampling.presets import resolve_options

    opts = resolve_options(options, pipe.config)
    problem = loop_for(pipe.config.spec.sampling).carry_problem
    return lambda carry, kept: problem(carry, kept, audio.num_frames, opts, pipe.config)


# ------------------------------------------------------------------ frame segments
def encode_segment(frames: torch.Tensor) -> bytes:
    """uint8 frames [F, H, W, 3] → a lossless segment (raw bytes where this PyAV lacks libx264rgb)."""
    import av

    array = frames.cpu().numpy()
    if SEGMENT_CODEC not in av.codecs_available:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return b"NPY" + buffer.getvalue()
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream(SEGMENT_CODEC, rate=25)
        stream.width, stream.height, stream.pix_fmt = array.shape[2], array.shape[1], "rgb24"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for image in array:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def decode_segment(data: bytes) -> torch.Tensor:
    import av

    if data.startswith(b"NPY"):
        return torch.from_numpy(np.load(io.BytesIO(data[3:])))
    with av.open(io.BytesIO(data)) as container:
        return torch.from_numpy(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))


# ------------------------------------------------------------------ the state
class RenderState:
    """One render's durable progress in `folder`. Opening it checks what is there: a state of the same inputs
    and settings is resumed; another render's is replaced (with a plain message); a damaged one is replaced
    with a warning. `say` prints the plain messages; `every_steps`: EchoMimic saves every N steps."""

    def __init__(self, folder: str | Path, fingerprint: dict[str, str], cap_bytes: int = DEFAULT_CAP_BYTES,
                 every_steps: int = 1, say: Callable[[str], None] = print,
                 check_carry: Callable[[dict, int], str | None] | None = None,
                 frame_shape: tuple[int, int] | None = None) -> None:
        """`check_carry(carry, frames kept)`: what is wrong with a saved carry for the frames kept (the sampling
        loop's own view), or None; `frame_shape`: (height, width) of this render's frames."""
        self.folder, self.fingerprint, self.cap_bytes = Path(folder), dict(fingerprint), cap_bytes
        self.check_carry, self.frame_shape = check_carry, frame_shape
        self.every_steps, self.say = max(1, int(every_steps)), say
        self.active = True
        self.segments: list[dict] = []
        self.carry_entry: dict | None = None
        self.kept_entry: dict | None = None
        self.frames_done = 0
        self.kept: dict[str, torch.Tensor] = {}
        self._carry: dict | None = None
        self._pending: dict | None = None  # a carry saved for the frames the caller commits next
        self._serial = 0
        self._kept_changed = False
        self._open()

    # ---- opening
    def _open(self) -> None:
        if not self.folder.exists() and not self.folder.is_symlink():
            return
        try:
            ours(self.folder)  # a link, a file or another user's folder is neither read, written nor removed
        except UnsafePath:
            return self._refuse("it is a link or a file, not the folder this pack makes"
                                if self.folder.is_symlink() or not self.folder.is_dir() else "it belongs to another user")
        except OSError as err:
            return self._refuse(f"it cannot be read ({err.strerror})")
        if not (self.folder / MANIFEST).is_file():  # stopped before its first clip was kept: nothing to resume
            remove_folder(self.folder)
            return
        try:
            manifest = _valid_manifest(json.loads(_read_plain(self.folder / MANIFEST)))
            changed = [k for k in sorted(set(self.fingerprint) | set(manifest["fingerprint"]))
                       if self.fingerprint.get(k) != manifest["fingerprint"].get(k)]
            if not changed:
                self._load(manifest)
        except Exception as err:  # noqa: BLE001  (anything wrong in it, or in the files it names, is damage)
            warnings.warn(f"The saved progress in {self.folder} is damaged ({_short(err)}): starting this render "
                          "afresh.", stacklevel=3)
            self._wipe()
            return
        if changed:
            self.say(f"The saved progress in {self.folder} was made with another {', '.join(changed)}; it does not "
                     "fit this render, so the render starts afresh (the old progress is removed).")
            self._wipe()
            return
        self.say(f"Resuming: {self.frames_done} frames already made are taken from {self.folder}.")

    def _refuse(self, reason: str) -> None:
        """A resume folder we did not make: neither read, written nor removed; this render keeps no progress."""
        self.say(f"{self.folder} is not used to keep progress: {reason}. This render starts afresh and keeps no "
                 "progress; remove that path to have progress kept.")
        self.active = False

    def _load(self, manifest: dict) -> None:
        """The files a valid manifest names, each checked: size and hash, the frames really in each segment,
        the carry as the sampling loop will read it."""
        carry, kept = manifest["carry"], manifest["kept"]
        for entry in [*manifest["segments"], *(e for e in (carry, kept) if e)]:
            self._check(entry)
        shapes = set()
        for entry in manifest["segments"]:  # the frames each segment really holds, decoded
            frames = decode_segment(_read_plain(self.folder / entry["file"]))
            if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) != entry["frames"]:
                raise ValueError(f"{entry['file']} holds {len(frames)} frames, the manifest says {entry['frames']}")
            shapes.add(tuple(frames.shape[1:]))
        if self.frame_shape is not None:
            shapes.add(tuple(self.frame_shape) + (3,))
        if len(shapes) > 1:
            raise ValueError(f"its frames are of different sizes ({', '.join(f'{w}x{h}' for h, w, _ in shapes)})")
        # mmap: a carry of gigabytes is read as the loop moves it to the device, not copied first
        if carry:
            self._carry = _plain_tensors(torch.load(self.folder / carry["file"], weights_only=True, mmap=True,
                                                    map_location="cpu"), carry["file"])
            problem = self.check_carry(self._carry, manifest["frames"]) if self.check_carry else None
            if problem:
                raise ValueError(problem)
        if kept:
            self.kept = _plain_tensors(torch.load(self.folder / kept["file"], weights_only=True, map_location="cpu"),
                                       kept["file"])
        self.segments, self.carry_entry, self.kept_entry = manifest["segments"], carry, kept
        self.frames_done = manifest["frames"]
        self._serial = manifest["serial"]

    def _check(self, entry: dict) -> None:
        path = self.folder / entry["file"]  # a plain name (checked): inside the folder
        if not path.is_file() or path.is_symlink() or path.stat().st_size != entry["bytes"] \
                or _sha256_of(path) != entry["sha256"]:
            raise ValueError(f"{entry['file']} is missing or not what was written")

    # ---- the sampling loop's side
    def restore(self) -> dict | None:
        """What the loop saved last (tensors on the CPU), or None to start from the beginning."""
        carry, self._carry = self._carry, None  # the loop holds it from now on
        return carry if self.active else None

    def due(self, step: int) -> bool:
        """Whether the loop should save after `step` steps (EchoMimic's windows)."""
        return self.active and step % self.every_steps == 0

    def save(self, carry: dict, with_next_frames: bool = False) -> None:
        """Keep what the loop needs to go on. `with_next_frames`: it belongs with the frames the caller commits
        next (a clip's carry is only valid once that clip's frames are kept); otherwise it is kept now."""
        if not self.active:
            return
        if with_next_frames:
            self._pending = carry
        else:
            self._write(carry=carry)

    # ---- the video writer's side
    def stored_frames(self) -> Iterator[torch.Tensor]:
        """The frames kept so far, uint8 [f, H, W, 3], segment by segment."""
        for entry in self.segments:
            yield decode_segment(_read_plain(self.folder / entry["file"]))

    def keep(self, name: str, tensor: torch.Tensor) -> None:
        """A tensor of the caller's to keep with the next carry (e.g. the colour reference of paste-back)."""
        self.kept[name] = tensor.detach().cpu().clone()
        self._kept_changed = True

    def commit(self, frames: torch.Tensor) -> None:
        """The frames just written to the video (uint8 [f, H, W, 3]), with the carry saved for them."""
        if not self.active:
            return
        carry, self._pending = self._pending, None
        self._write(frames=frames, carry=carry)

    def finish(self) -> None:
        """The MP4 is complete: the state is no longer needed."""
        self._wipe()
        self.active = False

    # ---- writing
    def _write(self, frames: torch.Tensor | None = None, carry: dict | None = None) -> None:
        self._serial += 1
        segment_data = encode_segment(frames) if frames is not None else None
        kept = dict(self.kept) if self._kept_changed else None
        needed = (len(segment_data) if segment_data is not None else 0) + _nbytes(carry) + _nbytes(kept)
        if not self._room_for(needed):
            return
        try:
            private_folder(self.folder)
            old = [e for e, new in ((self.carry_entry, carry), (self.kept_entry, kept)) if e and new is not None]
            if segment_data is not None:
                name = f"frames_{self._serial:05d}.mkv"
                write_atomic(self.folder / name, segment_data, mode=0o600)
                self.segments.append(self._entry(name, len(segment_data), hashlib.sha256(segment_data).hexdigest(),
                                                 frames=len(frames)))
                self.frames_done += len(frames)
            if carry is not None:
                self.carry_entry = self._save_tensors(f"carry_{self._serial:05d}.pt", carry)
            if kept is not None:
                self.kept_entry = self._save_tensors(f"kept_{self._serial:05d}.pt", kept)
                self._kept_changed = False
            manifest = {"version": VERSION, "fingerprint": self.fingerprint, "frames": self.frames_done,
                        "segments": self.segments, "carry": self.carry_entry, "kept": self.kept_entry,
                        "serial": self._serial}
            write_atomic(self.folder / MANIFEST, json.dumps(manifest, indent=1).encode(), mode=0o600)
            for entry in old:  # replaced: the manifest no longer names them (plain names: inside the folder)
                remove_file(self.folder / entry["file"])
        except OSError as err:
            self._give_up(f"it could not be written ({err})")

    def _save_tensors(self, name: str, value: dict) -> dict:
        """torch.save straight to the file, hashed on the way: a carry can be gigabytes (MEMO's memory), so it is
        neither copied to the CPU whole nor held in memory as bytes (torch.save copies one tensor at a time)."""
        writers = []

        def write(f) -> None:
            writers.append(_HashingWriter(f))
            torch.save(value, writers[0])

        write_atomic(self.folder / name, write=write, mode=0o600)
        return self._entry(name, writers[0].size, writers[0].sha256.hexdigest())

    def _entry(self, name: str, size: int, sha256: str, **extra: int) -> dict:
        return {"file": name, "bytes": size, "sha256": sha256, **extra}

    def _room_for(self, new_bytes: int) -> bool:
        entries = [*self.segments, *(e for e in (self.carry_entry, self.kept_entry) if e)]
        used = sum(e["bytes"] for e in entries)
        if used + new_bytes > self.cap_bytes:
            self._give_up(f"it would pass its cap of {self.cap_bytes / 2**30:.1f} GiB")
            return False
        where = self.folder if self.folder.exists() else self.folder.parent
        free = shutil.disk_usage(where).free
        if free - new_bytes < RESERVE_BYTES:
            self._give_up(f"the disk is short ({free / 2**30:.2f} GiB free, {RESERVE_BYTES / 2**30:.1f} GiB "
                          "kept free for the video)")
            return False
        return True

    def _give_up(self, reason: str) -> None:
        self.say(f"Progress is no longer kept in {self.folder}: {reason}. The render goes on, but if it stops "
                 "now it starts over. Free some space or raise the cap to keep progress.")
        self._wipe()
        self.active = False

    def _wipe(self) -> None:
        remove_folder(self.folder)  # never through a link, inside it or at its name
        self.segments, self.carry_entry, self.kept_entry, self.frames_done = [], None, None, 0
        self._carry, self._pending, self.kept = None, None, {}


class _HashingWriter:
    def __init__(self, file) -> None:
        self.file, self.sha256, self.size = file, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.file.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.file.flush()


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return 0


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**24), b""):
            h.update(block)
    return h.hexdigest()


def _read_plain(path: Path) -> bytes:
    """A state file's bytes, never through a link."""
    fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _short(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]


NAME_PATTERNS = {"segment": re.compile(r"frames_\d{5,}\.mkv"), "carry": re.compile(r"carry_\d{5,}\.pt"),
                 "kept": re.compile(r"kept_\d{5,}\.pt")}
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_FRAMES = 10**8  # a manifest's numbers are held to what a render can make ...
MAX_BYTES = 2**50  # ... and to what a disk can hold (MEMO's carry alone is gigabytes)


def _count(value: object, low: int, what: str, high: int = MAX_FRAMES) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{what} is {str(value)[:30]}, not a whole number from {low} to {high}")
    return value


def _valid_entry(entry: object, kind: str) -> dict:
    if not isinstance(entry, dict):
        raise ValueError(f"a {kind} entry is {type(entry).__name__}, not an object")
    name = entry.get("file")
    if not plain_name(name) or not NAME_PATTERNS[kind].fullmatch(name):
        raise ValueError(f"a {kind} entry names {str(name)[:60]!r}, not one of this pack's file names")
    _count(entry.get("bytes"), 1, f"{name}'s size", MAX_BYTES)
    if not isinstance(entry.get("sha256"), str) or not SHA256.fullmatch(entry["sha256"]):
        raise ValueError(f"{name}'s hash is not a sha256")
    if kind == "segment":
        _count(entry.get("frames"), 1, f"{name}'s frame count")
    return entry


def _valid_manifest(manifest: object) -> dict:
    """The manifest as this code writes it, every name a plain file name of ours and every number in range; any
    other form is damage (a file anyone with access to the folder may have changed is input like any other)."""
    if not isinstance(manifest, dict):
        raise ValueError("the manifest is not a JSON object")
    if manifest.get("version") != VERSION:
        raise ValueError(f"state version {str(manifest.get('version'))[:20]}, this code reads {VERSION}")
    fp = manifest.get("fingerprint")
    if not isinstance(fp, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in fp.items()):
        raise ValueError("its fingerprint is not a set of named values")
    segments = manifest.get("segments")
    if not isinstance(segments, list):
        raise ValueError("its segments are not a list")
    segments = [_valid_entry(e, "segment") for e in segments]
    carry = None if manifest.get("carry") is None else _valid_entry(manifest["carry"], "carry")
    kept = None if manifest.get("kept") is None else _valid_entry(manifest["kept"], "kept")
    frames = _count(manifest.get("frames"), 0, "its frame count")
    serial = _count(manifest.get("serial"), 0, "its serial")
    if sum(e["frames"] for e in segments) != frames:
        raise ValueError("the frame count does not add up")
    names = [e["file"] for e in [*segments, *(x for x in (carry, kept) if x)]]
    if len(set(names)) != len(names) or any(int(re.sub(r"\D", "", n)) > serial for n in names):
        raise ValueError("its file names repeat or run past its serial")
    if segments and carry is None:
        raise ValueError("it keeps frames without the state that continues them")
    return {"version": VERSION, "fingerprint": fp, "frames": frames, "segments": segments, "carry": carry,
            "kept": kept, "serial": serial}


def _plain_tensors(value: object, name: str) -> Any:
    """A carry as the loops save it: tensors, numbers, strings, None, in dicts, lists and tuples."""
    if isinstance(value, dict):
        return {k: _plain_tensors(v, name) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_tensors(v, name) for v in value)
    if value is None or isinstance(value, (torch.Tensor, int, float, str, bool)):
        return value
    raise ValueError(f"{name} holds a {type(value).__name__}, not plain tensors")


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Frames as the video writer stores them: uint8, rounded from 0..1 floats."""
    if frames.dtype == torch.uint8:
        return frames.cpu()
    return (frames.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def resumed_frames(state: RenderState | None, clips: Iterator[torch.Tensor],
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Iterator[torch.Tensor]:
    """The whole video's frames (uint8) for a writer: those kept from before, then the sampled ones (after
    `transform`, e.g. paste-back), each kept once the writer has taken it (when it asks for the next)."""
    if state is not None:
        yield from state.stored_frames()
    for frames in clips:
        frames = to_uint8(transform(frames) if transform is not None else frames)
        yield frames
        if state is not None:
            state.commit(frames)
