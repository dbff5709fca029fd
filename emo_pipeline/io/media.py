"""Audio, image and video files through PyAV and Pillow: no ffmpeg binary, no torchaudio.

Videos are H.264 (yuv420p) with AAC sound in MP4, streamed frame by frame and written to a
temporary file that is renamed only when complete, so an error or interrupt leaves nothing
half-written behind.
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch

from .disk import MiB, DiskFullError, disk_full_error, is_disk_full
from .errors import NamedPlainly
from .safe_files import open_new, remove_file

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def _open_for(path: Path, kind: str) -> av.container.InputContainer:
    """`path` opened for reading its `kind` ("audio" or "video") stream, with errors that name the file and what
    is wrong with it (missing, unreadable, no such stream)."""
    if not path.is_file():
        raise FileNotFoundError(f"{kind.capitalize()} file not found: {path}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise ValueError(f"Cannot read {path.name} as {'audio' if kind == 'audio' else 'a video'}: {err}") from None
    if not getattr(container.streams, kind):
        container.close()
        raise ValueError(f"{path.name} has no {kind} stream.")
    return container


def load_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """First audio stream of any file → (waveform [C, T] float32 in -1..1, sample rate)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give an audio file (WAV, MP3, a video with sound, ...).")
    with _open_for(path, "audio") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
        chunks, broken, last_packet = [], None, b""
        try:
            for packet in container.demux(stream):
                if packet.size:
                    last_packet = bytes(packet)
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray())
        except av.FFmpegError as err:  # damaged data: keep what was read, and say so below
            broken = err
        # An MP3 without a frame-count header gives no duration: a file that ends inside a frame was cut.
        if stream.codec_context.name.startswith(("mp1", "mp2", "mp3")) and _mpeg_frame_cut(last_packet):
            broken = broken or "the last MPEG audio frame is incomplete"
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
        rate = stream.rate
        # AAC decoders pad the last frame to 1024 samples; the stream's duration says where the sound ends.
        declared = round(stream.duration * stream.time_base * rate) if stream.duration else None
        # FFmpeg sizes a cut-short WAV by what is there; its header still says how much there was.
        wav_frames = _wav_declared_frames(path, stream.channels, stream.format.bytes)
    if not chunks:
        raise ValueError(f"{path.name} contains no audio samples.")
    samples = np.concatenate(chunks, axis=1).astype(np.float32)
    if declared:
        samples = samples[:, :declared]
    read = samples.shape[1]
    declared = max(declared or 0, wav_frames or 0) or None
    short = bool(declared) and declared - read > 0.05 * rate
    samples = _within_unit_range(samples, path.name)
    if broken is not None or short:
        expected = f" of the {declared / rate:.2f} s its header declares" if short else ""
        warnings.warn(f"{path.name}: only {read / rate:.2f} s of audio could be read{expected} (the file seems cut "
                      "short or damaged); the video follows the audio that was read.", stacklevel=2)
    return torch.from_numpy(samples), int(rate)


# Float files may hold any values; a peak past this is not a loud mix but an unscaled one (1e30 was seen),
# which clipping would turn into a square wave.
FAR_OUTSIDE_UNIT = 2.0


def _within_unit_range(samples: np.ndarray, name: str) -> np.ndarray:
    """Samples refused when not finite, scaled down (with a warning) when they reach far outside -1..1."""
    if not np.isfinite(samples).all():
        raise ValueError(f"{name} holds samples that are not numbers (NaN or infinity): the file is damaged or "
                         "was written wrongly; export the audio again.")
    peak = float(np.abs(samples).max())
    if peak > FAR_OUTSIDE_UNIT:
        warnings.warn(f"{name}: its samples reach {peak:.3g}, far outside -1..1 (float audio written unscaled?); "
                      f"scaled down by {peak:.3g} so that the sound is not clipped.", stacklevel=3)
        samples = samples / np.float32(peak)
    return samples


# kbit/s by bitrate index: MPEG-1 layers I, II, III; MPEG-2/2.5 layer I; MPEG-2/2.5 layers II and III
_MPEG_KBPS = {
    (1, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}


def _mpeg_frame_cut(packet: bytes) -> bool:
    """Whether an MPEG audio frame (a demuxed MP3 packet) is shorter than its own header says."""
    if len(packet) < 4 or packet[0] != 0xFF or packet[1] & 0xE0 != 0xE0:
        return False
    version, layer = (packet[1] >> 3) & 3, 4 - ((packet[1] >> 1) & 3)  # version 3: MPEG-1, 2: MPEG-2, 0: 2.5
    rate_index, bitrate_index, padding = (packet[2] >> 2) & 3, packet[2] >> 4, (packet[2] >> 1) & 1
    if version == 1 or layer == 4 or rate_index == 3 or bitrate_index in (0, 15):
        return False  # reserved or free-format: no length to check against
    mpeg1 = version == 3
    kbps = _MPEG_KBPS[(1, layer) if mpeg1 else (2, 1 if layer == 1 else 2)][bitrate_index]
    rate = (44100, 48000, 32000)[rate_index] // (1 if mpeg1 else 2 if version == 2 else 4)
    if layer == 1:
        length = (12 * kbps * 1000 // rate + padding) * 4
    else:
        length = (144 if mpeg1 or layer == 2 else 72) * kbps * 1000 // rate + padding
    return len(packet) < length


def _wav_declared_frames(path: Path, channels: int, sample_bytes: int) -> int | None:
    """The sample frames a WAV file's `data` chunk says it holds (None for other files)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE" or not channels or not sample_bytes:
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                return size // (channels * sample_bytes) if size not in (0, 0xFFFFFFFF) else None
            f.seek(size + (size & 1), 1)


# Photos are decoded at no more than this many pixels on the long side: the face search works at
# 640 px and the model at 512, so an 80-megapixel photo need not be held in full (JPEG decodes
# straight to a reduced size; other formats are reduced after decoding).
MAX_IMAGE_SIDE = 4096


def load_image(path: str | Path) -> torch.Tensor:
    """Any image Pillow reads → [H, W, 3] float32 in 0..1 (transparency composited onto white;
    16-bit and float images scaled, not clipped; huge photos reduced to MAX_IMAGE_SIDE). Refused: more
    than MAX_IMAGE_PIXELS, a PNG failing its checksums; a JPEG with damaged data is used with a warning."""
    from PIL import Image, UnidentifiedImageError

    from .image_checks import bomb_message, jpeg_damage, png_checksum_problem, size_problem

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give an image file (PNG or JPEG).")
    if not path.is_file():
        raise FileNotFoundError(f"Image file not found: {path}")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns from 89 MP; the size is checked here, against MAX_IMAGE_PIXELS
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                problem = size_problem(path, *img.size)
                if problem is None and img.format == "PNG":
                    problem = png_checksum_problem(path)
                    problem = problem and problem + ". Use another copy, or save it again from where it came from."
                if problem:
                    raise ImageRefused(problem)
                damage = jpeg_damage(path) if img.format == "JPEG" else None
                if max(img.size) > MAX_IMAGE_SIDE and img.format == "JPEG":
                    scale = MAX_IMAGE_SIDE / max(img.size)
                    img.draft("RGB", (int(img.width * scale) + 1, int(img.height * scale) + 1))
                img.load()
                if max(img.size) > MAX_IMAGE_SIDE:
                    img.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
                img = _eight_bit(img)
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                rgb = Image.alpha_composite(background, img).convert("RGB")
    except ImageRefused as err:
        raise ValueError(f"Cannot use {path}: {err}") from None
    except Image.DecompressionBombError as err:  # Pillow's own limit (2 × 89 MP), met as the header is read
        claimed = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{int(claimed.group(1)) / 1e6:.0f} megapixels" if claimed else "too many pixels"
        raise ValueError(f"Cannot use {path}: {bomb_message(path, pixels)}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"Cannot read {path} as an image ({type(err).__name__}: {str(err)[:200]}). The file may be "
                         "cut short, damaged or not an image: open it in an image viewer, or save it again as PNG "
                         "or JPEG.") from None
    if damage:
        warnings.warn(f"{damage}: parts of the picture may be wrong. Use another copy, or save it again.",
                      stacklevel=2)
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)


class ImageRefused(NamedPlainly, Exception):
    """An image that is readable but must not be used (see image_checks)."""


def _eight_bit(img):
    """16-bit, 32-bit integer and float single-channel images → 8-bit grey, scaled by their range
    (Pillow's own conversion clips them to 0..255)."""
    from PIL import Image

    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return img
    values = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
    if img.mode == "F" and values.max() <= 1.0:
        top = 1.0
    return Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    if frames.dtype != torch.uint8:
        frames = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return frames.cpu().numpy()


def remove_stale_partials(path: Path) -> None:
    """Delete partial files of `path` left by writers whose process is gone (killed, so it could not clean
    up); a resumed render starts a new one. Another live process's partial file is left alone."""
    for partial in path.parent.glob(f".{path.stem}.*-*.partial.mp4"):
        try:
            pid = int(partial.name[len(path.stem) + 2:].split("-", 1)[0])
            os.kill(pid, 0)
        except ValueError:
            continue  # not a name this writer makes
        except ProcessLookupError:
            partial.unlink(missing_ok=True)
        except PermissionError:
            pass  # a live process of another user


class VideoWriter:
    """Streams frames into an MP4; the file appears at `path` only after a successful `close()`."""

    def __init__(self, path: str | Path, fps: float, width: int, height: int,
                 audio: tuple[torch.Tensor, int] | None = None, crf: int = 19,
                 metadata: dict[str, str] | None = None, expected_frames: int | None = None) -> None:
        self.path = Path(path)
        self.expected_frames = expected_frames  # for the space a full disk is short of
        # unique per writer: two runs writing the same path never share (and swap) a temporary file
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial.mp4")
        remove_stale_partials(self.path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.size = (width, height)
        self.audio = audio
        self.frames = 0
        # Created by us, exclusively and never through a link at its name; use_metadata_tags lets MP4 carry
        # arbitrary keys (the ComfyUI workflow, for instance).
        self.file = open_new(self.tmp, 0o644)
        try:
            self.container = av.open(self.file, "w", format="mp4", options={"movflags": "use_metadata_tags"})
        except BaseException:
            self.file.close()
            remove_file(self.tmp)
            raise
        for key, value in (metadata or {}).items():
            self.container.metadata[key] = str(value)
        self.video = self.container.add_stream("libx264", rate=self.fps)
        # yuv420p needs even sizes: round up, padding with the edge pixels.
        self.video.width, self.video.height = width + width % 2, height + height % 2
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": str(crf)}
        if width < 128:
            # x264's macroblock-tree code reads uninitialised memory on rows of fewer than 8 macroblocks,
            # so tiny videos came out different from run to run; without it they are reproducible.
            self.video.options["x264-params"] = "mbtree=0"
        self.audio_stream = None
        if audio is not None:  # streams must all exist before the first packet is written
            channels = audio[0].shape[-2] if audio[0].ndim > 1 else 1
            self.audio_layout = "stereo" if channels == 2 else "mono"
            self.audio_rate = audio[1] if audio[1] in AAC_RATES else 48000
            self.audio_stream = self.container.add_stream("aac", rate=self.audio_rate, layout=self.audio_layout)

    def write(self, frames: torch.Tensor) -> None:
        """frames [F, H, W, 3] float in 0..1 or uint8."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or tuple(frames.shape[2:0:-1]) != self.size:
            raise ValueError(f"Expected frames [F, {self.size[1]}, {self.size[0]}, 3], got {tuple(frames.shape)}.")
        array = _to_uint8(frames)
        pad_h, pad_w = self.video.height - array.shape[1], self.video.width - array.shape[2]
        if pad_h or pad_w:
            array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        try:
            for image in array:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                self.container.mux(self.video.encode(frame))
                self.frames += 1
        except OSError as err:
            if is_disk_full(err):
                raise self._disk_full(err) from None
            raise

    def _disk_full(self, err: OSError) -> DiskFullError:
        """The partial file removed, and the space the whole video needs, from what it took so far."""
        try:
            written = self.tmp.stat().st_size
        except OSError:
            written = 0
        self.abort()
        total = max(self.expected_frames or 0, self.frames, 1)
        needed = written * total / max(self.frames, 1) + MiB
        return disk_full_error(self.path.parent, f"the video {self.path.name}", int(needed))

    def _write_audio(self) -> None:
        waveform, rate = self.audio
        waveform = waveform.float()
        if waveform.ndim == 3:
            waveform = waveform[0]
        if waveform.ndim == 1:
            waveform = waveform[None]
        if waveform.shape[0] > 2:
            waveform = waveform.mean(0, keepdim=True)
        samples = waveform.clamp(-1, 1).cpu().numpy()
        layout, out_rate, stream = self.audio_layout, self.audio_rate, self.audio_stream
        if out_rate != rate:
            from ..audio.resample import resample

            samples = resample(torch.from_numpy(samples), rate, out_rate).numpy()
        # The sound lasts exactly as long as the frames: trim or pad with silence.
        length = round(self.frames / self.fps * out_rate)
        samples = samples[:, :length]
        if samples.shape[1] < length:
            samples = np.pad(samples, ((0, 0), (0, length - samples.shape[1])))
        chunk = 1024  # AAC's frame size
        for start in range(0, length, chunk):
            part = np.ascontiguousarray(samples[:, start: start + chunk], dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(part, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = out_rate, start
            self.container.mux(stream.encode(frame))
        self.container.mux(stream.encode(None))

    def close(self) -> Path:
        if self.container is None:
            return self.path
        try:
            self.container.mux(self.video.encode(None))
            if self.audio is not None and self.frames:
                self._write_audio()
            self.container.close()
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        except OSError as err:
            if is_disk_full(err):
                raise self._disk_full(err) from None
            self.abort()
            raise
        except BaseException:
            self.abort()
            raise
        self.container = None
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Stop and delete the partial file; nothing appears at `path`."""
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # noqa: BLE001 - the file is discarded anyway
                pass
            self.container = None
        try:
            self.file.close()  # flushes what is buffered: on a full disk that fails too
        except OSError:
            pass
        remove_file(self.tmp)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | Path, frames: torch.Tensor, fps: float, audio: tuple[torch.Tensor, int] | None = None,
                crf: int = 19, metadata: dict[str, str] | None = None) -> Path:
    """Write all frames [F, H, W, 3] at once; returns the final path."""
    with VideoWriter(path, fps, frames.shape[2], frames.shape[1], audio, crf, metadata) as writer:
        writer.write(frames)
    return writer.path


def read_video_info(path: str | Path) -> dict:
    """Frame count (decoded), fps, size, audio duration (s) and rate, and container metadata."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info = {
            "fps": float(video.average_rate), "width": video.codec_context.width,
            "height": video.codec_context.height, "metadata": dict(container.metadata),
            "audio_duration": None, "audio_sample_rate": None,
        }
        info["frame_count"] = sum(1 for _ in container.decode(video))
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            decoded = sum(frame.samples for frame in container.decode(stream)) / stream.rate
            # The stream's own duration excludes AAC's padding of the last 1024-sample frame.
            info["audio_duration"] = float(stream.duration * stream.time_base) if stream.duration else decoded
            info["audio_sample_rate"] = stream.rate
    return info


def probe_video(path: str | Path) -> dict:
    """fps, width, height, the frame count the container declares (0 if it does not) and whether there is
    sound, without decoding."""
    with _open_for(Path(path), "video") as container:
        video = container.streams.video[0]
        return {"fps": float(video.average_rate or 25), "width": video.codec_context.width,
                "height": video.codec_context.height, "frames": int(video.frames or 0),
                "has_audio": bool(container.streams.audio)}


def iter_video_frames(path: str | Path, batch: int = 16) -> Iterator[torch.Tensor]:
    """A video's frames, decoded as they are needed, in batches [≤batch, H, W, 3] float32 in 0..1: a long
    video is never held whole."""
    with _open_for(Path(path), "video") as container:
        pending = []
        for frame in container.decode(container.streams.video[0]):
            pending.append(frame.to_ndarray(format="rgb24"))
            if len(pending) == batch:
                yield torch.from_numpy(np.stack(pending)).float() / 255
                pending = []
        if pending:
            yield torch.from_numpy(np.stack(pending)).float() / 255
