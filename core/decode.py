"""Decoding untrusted image bytes: a real decode under limits.

Web images are hostile: truncated streams, decompression bombs, HTML saved as .jpg.
``decode`` turns bytes into a normalised RGB image or raises ``Rejected`` with a reason.
It runs in the isolated children of ``core.isolation.DecoderPool``.
"""

from __future__ import annotations

import enum
import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.config import Settings

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
# Register Pillow's plugins at import: the fork server imports this module once, so each
# child starts with them instead of importing some 40 modules on its first file.
Image.init()

# Signatures of formats that are images but not allowed (Pillow could open some of them:
# EPS runs Ghostscript, PSD and TIFF are large attack surfaces for little gain).
_OTHER_IMAGE_MAGIC = (
    b"%!PS",
    b"\xc5\xd0\xd3\xc6",
    b"8BPS",
    b"II*\x00",
    b"MM\x00*",
    b"%PDF",
    b"\x00\x00\x01\x00",
    b"\x00\x00\x00\x0cjP  ",
    b"\xff\x4f\xff\x51",
)
_TRUNCATION_HINTS = ("truncat", "buffer", "incomplete", "could not create decoder", "premature")


class Reason(enum.StrEnum):
    """Why an image was rejected; stored in Image.reject_reason and counted in statistics."""

    empty = "empty file"
    not_image = "not an image"
    unsupported = "unsupported format"
    truncated = "truncated"
    corrupt = "corrupt"
    bomb = "decompression bomb"
    frames = "too many frames"
    too_small = "too small"
    memory = "out of memory"
    crashed = "decoder crashed"
    timeout = "decode timeout"
    missing = "missing file"


class Rejected(Exception):
    def __init__(
        self, reason: Reason, fmt: str | None = None, size: tuple[int, int] | None = None
    ) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.format = fmt
        self.size = size


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = 64_000_000
    min_side: int = 32
    normal_max_side: int = 512
    thumb_max_side: int = 160
    max_frames: int = 1000
    memory_bytes: int = 2 << 30
    cpu_seconds: int = 30


def decode_limits(settings: Settings) -> DecodeLimits:
    """The deployment's limits, the same for verification and for predict."""
    return DecodeLimits(
        max_pixels=settings.max_pixels,
        min_side=settings.min_image_side,
        normal_max_side=settings.normal_max_side,
        thumb_max_side=settings.thumb_max_side,
    )


@dataclass
class Decoded:
    image: Image.Image  # RGB, longest side at most normal_max_side
    format: str
    width: int  # of the original, after EXIF orientation
    height: int
    frames: int


def decode(data: bytes, limits: DecodeLimits) -> Decoded:
    """Fully decode the first frame of an allowed format into a normalised RGB image."""
    if not data:
        raise Rejected(Reason.empty)
    try:
        with warnings.catch_warnings():
            # Pillow warns about damage it can live with (corrupt EXIF, odd palettes); only
            # the bomb warning means the file must be refused.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _decode(data, limits)
    except Rejected:
        raise
    except MemoryError as exc:
        raise Rejected(Reason.memory) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejected(Reason.bomb, _sniff(data)) from exc
    except UnidentifiedImageError as exc:
        fmt = _sniff(data)
        if fmt is not None:
            # An allowed signature Pillow cannot parse: the header was cut off or mangled.
            raise Rejected(Reason.truncated if len(data) < 64 else Reason.corrupt, fmt) from exc
        other = data.lstrip()[:16].startswith(_OTHER_IMAGE_MAGIC) or _is_svg(data)
        raise Rejected(Reason.unsupported if other else Reason.not_image) from exc
    except Exception as exc:
        # Pillow's plugins raise OSError, SyntaxError, ValueError, struct.error, EOFError...
        # for broken streams; every one of them means this file cannot be trusted.
        text = f"{type(exc).__name__} {exc}".lower()
        truncated = isinstance(exc, EOFError) or any(h in text for h in _TRUNCATION_HINTS)
        raise Rejected(Reason.truncated if truncated else Reason.corrupt, _sniff(data)) from exc


def _decode(data: bytes, limits: DecodeLimits) -> Decoded:
    opened = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    fmt = opened.format or "?"
    width, height = opened.size
    if width * height > limits.max_pixels:
        raise Rejected(Reason.bomb, fmt, opened.size)
    frames = _frame_count(data, opened, limits)
    if fmt == "JPEG":
        # DCT scaling decodes at 1/2, 1/4 or 1/8 size yet still reads the whole stream,
        # so truncation is still detected. Ask for the normalised size, not less.
        side = limits.normal_max_side
        opened.draft(opened.mode, (side, 1) if width >= height else (1, side))
    opened.load()
    orientation = _orientation(opened)
    im: Image.Image = opened
    if im.mode not in ("RGB", "L"):
        im = to_rgb(im)
    im = shrink(im, limits.normal_max_side)
    if im.mode != "RGB":
        im = im.convert("RGB")
    if orientation is not None:
        im = im.transpose(orientation)
        if orientation in _SWAPS_SIDES:
            width, height = height, width
    return Decoded(image=im, format=fmt, width=width, height=height, frames=frames)


def _frame_count(data: bytes, im: Image.Image, limits: DecodeLimits) -> int:
    if im.format == "GIF":
        frames, canvas = gif_frames(data, limits.max_frames)
        # Pillow grows the canvas to fit any frame, so a later frame can be the bomb.
        if canvas > limits.max_pixels:
            raise Rejected(Reason.bomb, im.format, im.size)
    else:
        frames = int(getattr(im, "n_frames", 1))
    if frames > limits.max_frames:
        raise Rejected(Reason.frames, im.format, im.size)
    return max(frames, 1)


def gif_frames(data: bytes, max_frames: int) -> tuple[int, int]:
    """Count GIF frames (up to max_frames + 1) and the canvas area they need, headers only."""
    if len(data) < 13:
        return 0, 0
    width, height = struct.unpack_from("<HH", data, 6)
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    frames = 0
    while pos < len(data) and frames <= max_frames:
        block = data[pos]
        if block == 0x21:
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C and pos + 10 <= len(data):
            left, top, w, h, flags = struct.unpack_from("<HHHHB", data, pos + 1)
            frames += 1
            width, height = max(width, left + w), max(height, top + h)
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
            pos = _skip_sub_blocks(data, pos + 1)
        else:
            break  # trailer or garbage; the decoder itself judges the first frame
    return frames, width * height


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data):
        size = data[pos]
        pos += 1 + size
        if size == 0:
            break
    return pos


_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = {
    Image.Transpose.TRANSPOSE,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSVERSE,
    Image.Transpose.ROTATE_90,
}


def _orientation(im: Image.Image) -> Image.Transpose | None:
    try:
        value = im.getexif().get(0x0112)
    except Exception:
        # Malformed EXIF is common on the web and says nothing about the pixels.
        return None
    return _ORIENTATIONS.get(value) if isinstance(value, int) else None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparent areas become white, as on a web page."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # convert() clips 16-bit values at 255 instead of scaling them.
        pixels = np.asarray(im).astype(np.float32)
        if im.mode.startswith("I;16") or pixels.max(initial=0) > 255:
            pixels /= 257.0
        im = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


def shrink(im: Image.Image, max_side: int) -> Image.Image:
    """Scale down so that the longest side is at most ``max_side``; never scale up."""
    scale = max_side / max(im.size)
    if scale >= 1.0:
        return im
    if scale <= 0.5:
        # An integer box reduction first costs a fraction of resampling the whole image.
        im = im.reduce(int(1 / scale))
        scale = max_side / max(im.size)
        if scale >= 1.0:
            return im
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    # Area averaging: the usual filter for shrinking, and about 2.5x cheaper than bicubic
    # here, where resizing is the largest cost after the decode itself.
    return im.resize(size, Image.Resampling.BOX)


def _sniff(data: bytes) -> str | None:
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM":
        return "BMP"
    return None


def _is_svg(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head)
