"""Checks made on a photo before it is decoded: its size (decompression bombs) and its integrity (a PNG's
checksums, a JPEG's entropy-coded data), so that a damaged file is refused or warned about, never used as
if it were whole."""

from __future__ import annotations

import io
from pathlib import Path

# 120 megapixels: a 10000×8000 camera photo (80 MP) is taken; a file whose header claims more is a
# decompression bomb or a scan far beyond any use here (the model works at 512 px).
MAX_IMAGE_PIXELS = 120_000_000


def size_problem(path: Path, width: int, height: int) -> str | None:
    """Why an image of this size is refused (None: it is not)."""
    if width * height <= MAX_IMAGE_PIXELS:
        return None
    return bomb_message(path, f"{width}×{height} pixels ({width * height / 1e6:.0f} megapixels)")


def bomb_message(path: Path, claimed: str) -> str:
    return (f"{path.name} says it is {claimed}, more than the "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels read here: a file that small claiming that size is a "
            "decompression bomb. Use the photo itself, reduced to a few thousand pixels a side.")


def png_checksum_problem(path: Path) -> str | None:
    """A PNG whose chunks fail their CRC (its bytes changed since it was written); None when all match.
    Pillow checks them only on verify(), not when it decodes."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
    except (OSError, SyntaxError, ValueError) as err:
        if "checksum" in str(err).lower() or "crc" in str(err).lower():
            return f"{path.name} is damaged ({str(err)[:200]}): its data no longer matches its checksums"
    return None  # other faults (cut short, not a PNG) are for the decoder to report


def jpeg_damage(path: Path) -> str | None:
    """What FFmpeg's JPEG decoder reports about damaged entropy-coded data, which Pillow decodes without a
    word (None: nothing). JPEG has no checksum, so only damage that trips a decoder (a bad code, a read past
    the data) is found. Decoded at 1/8 size: every byte is still parsed."""
    import av

    try:
        with av.open(io.BytesIO(path.read_bytes()), format="jpeg_pipe") as container:
            stream = container.streams.video[0]
            stream.codec_context.options = {"err_detect": "careful+bitstream+buffer+explode", "lowres": "3"}
            for _ in container.decode(stream):
                pass
    except av.InvalidDataError:
        return f"{path.name}: the JPEG decoder found damaged data in it"
    except (av.FFmpegError, IndexError):  # a form FFmpeg does not take: nothing to say either way
        return None
    return None
