"""Decoding untrusted image bytes: a real decode under limits, in child processes.

Web images are hostile: truncated streams, decompression bombs, HTML saved as .jpg.
``decode`` turns bytes into a normalised RGB image or raises ``Rejected`` with a reason.
``DecoderPool`` runs a function over many items in child processes with memory and CPU
limits, so that a crash or an out-of-memory in a C decoder costs one item, not the worker.
"""

from __future__ import annotations

import enum
import io
import os
import signal
import struct
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import billiard
import numpy as np
from billiard.connection import wait
from PIL import Image, UnidentifiedImageError

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


T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Outcome(Generic[T, R]):
    item: T
    result: R | None = None
    failure: Reason | None = None  # crashed, timeout or out of memory
    error: str | None = None  # an unexpected exception in fn: a bug or I/O, not the image


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[[Any], Any], limits: DecodeLimits) -> None:
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child_conn, fn, limits), daemon=True)
        self.process.start()
        child_conn.close()
        self.queue: deque[Any] = deque()  # items sent, in the order the child runs them
        self.since = 0.0  # when the child started on the head of the queue
        self.sent = 0
        self.broken = False

    def give(self, item: Any) -> None:
        if not self.queue:
            self.since = time.monotonic()
        self.queue.append(item)
        self.sent += 1
        try:
            self.conn.send(item)
        except OSError:
            self.broken = True  # died while idle; _collect fails it, the item is retried

    def stop(self, kill: bool = False) -> None:
        if not kill:
            try:
                self.conn.send(None)
            except OSError:
                kill = True
        self.process.join(0 if kill else 5)
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.join()
        self.conn.close()


class DecoderPool(Generic[T, R]):
    """Run ``fn`` over items in forkserver children, each under memory and CPU limits.

    billiard (Celery's multiprocessing) rather than the standard library: inside a
    prefork Celery worker the standard library refuses to start children of a daemon.
    A child that dies costs only the item it was running; it is replaced and the items
    queued behind it go to another child.
    """

    def __init__(
        self,
        fn: Callable[[T], R],
        workers: int | None = None,
        limits: DecodeLimits | None = None,
        max_tasks: int = 500,
        depth: int = 3,
    ) -> None:
        self.fn = fn
        self.limits = limits or DecodeLimits()
        self.size = workers or len(os.sched_getaffinity(0))
        self.max_tasks = max_tasks
        # Items queued per child, so that none waits for the parent between two items.
        self.depth = depth
        # A stuck decoder gets the wall-clock budget of its CPU limit, then is killed.
        self.wall_seconds = float(self.limits.cpu_seconds)
        self._ctx = billiard.get_context("forkserver")
        module = getattr(fn, "func", fn).__module__
        # The fork server imports these (and the main module, which every child would
        # otherwise import again) once; each child then starts in milliseconds.
        self._ctx.set_forkserver_preload(["__main__", __name__, module])
        self._workers: list[_Worker] = []
        self._retry: deque[T] = deque()

    def __enter__(self) -> DecoderPool[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.stop(kill=bool(worker.queue))
        self._workers = []

    def imap_unordered(self, items: Iterable[T]) -> Iterator[Outcome[T, R]]:
        """Outcomes as they finish. ``items`` may yield ``IDLE`` when it has nothing yet
        (a feed still being filled): the pool then tends to running items and asks again."""
        todo = iter(items)
        exhausted = False
        while len(self._workers) < self.size:
            self._workers.append(_Worker(self._ctx, self.fn, self.limits))
        while True:
            idle = False
            for index, worker in enumerate(self._workers):
                if not worker.queue and (
                    worker.broken or worker.sent >= self.max_tasks or not worker.process.is_alive()
                ):
                    # Also recycled now and then, so that leaks in C decoders do not pile up.
                    worker.stop(kill=worker.broken)
                    worker = self._workers[index] = _Worker(self._ctx, self.fn, self.limits)
                while not idle and len(worker.queue) < self.depth and worker.sent < self.max_tasks:
                    item = self._retry.popleft() if self._retry else next(todo, _DONE)
                    if item is _DONE:
                        exhausted = True
                        break
                    if item is IDLE:
                        idle = True
                        break
                    worker.give(item)
            busy = [w for w in self._workers if w.queue]
            if not busy:
                if exhausted:
                    return
                continue  # the feed waited before saying IDLE: ask it again
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=1.0)
            for worker in busy:
                yield from self._collect(worker)

    def _collect(self, worker: _Worker) -> Iterator[Outcome[T, R]]:
        failure: Reason | None = None
        while worker.queue and not worker.broken and worker.conn.poll():
            try:
                kind, value = worker.conn.recv()
            except (EOFError, OSError):
                failure = Reason.crashed
                break
            item, worker.since = worker.queue.popleft(), time.monotonic()
            if kind == "ok":
                yield Outcome(item, result=value)
            else:
                memory = kind == "memory"
                yield Outcome(item, failure=Reason.memory if memory else None, error=value)
        if not worker.queue:
            return
        if failure is None and (worker.broken or not worker.process.is_alive()):
            failure = Reason.crashed
        if failure is None and time.monotonic() - worker.since > self.wall_seconds:
            failure = Reason.timeout
        if failure is not None:
            worker.stop(kill=True)
            worker.broken = True
            yield Outcome(worker.queue.popleft(), failure=failure)
            self._retry.extend(worker.queue)
            worker.queue.clear()


_DONE: Any = object()
# Yielded by a feed that has no item yet but is not finished.
IDLE: Any = object()


def _serve(conn: Any, fn: Callable[[Any], Any], limits: DecodeLimits) -> None:
    """Child loop: apply the limits once, then run items until told to stop."""
    _limit_child(limits)
    while True:
        try:
            item = conn.recv()
        except EOFError:
            return
        if item is None:
            return
        _cpu_budget(limits.cpu_seconds)
        try:
            reply: tuple[str, Any] = ("ok", fn(item))
        except MemoryError:
            reply = ("memory", None)
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(reply)


def _limit_child(limits: DecodeLimits) -> None:
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    try:
        import resource

        # The address-space limit counts what is already mapped (interpreter, libraries),
        # so the budget goes on top of the current size.
        with open("/proc/self/statm") as fh:
            mapped = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (mapped + limits.memory_bytes, hard))
    except (ImportError, OSError, ValueError):
        pass  # no /proc or no RLIMIT_AS (macOS): the wall-clock limit still applies


def _cpu_budget(seconds: int) -> None:
    try:
        import resource
    except ImportError:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime) + seconds + 1
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or soft < hard:
        # RLIMIT_CPU counts the whole life of the process; moving the soft limit before
        # each item turns it into a per-item budget. Past it the kernel kills the child.
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
