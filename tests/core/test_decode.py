"""Decoding hostile files, and the isolated pool surviving crashing decoders."""

from __future__ import annotations

import io
import os
import signal
import struct
import time
import zlib
from dataclasses import dataclass

import pytest
from PIL import Image

from core.decode import DecodeLimits, Reason, Rejected, decode, gif_frames
from core.isolation import DecoderPool

LIMITS = DecodeLimits(max_pixels=4_000_000, min_side=8, normal_max_side=128, thumb_max_side=32)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(size: tuple[int, int] = (240, 160)) -> Image.Image:
    """A picture with structure (not flat), so that truncation lands in real scan data."""
    return Image.effect_mandelbrot(size, (-2.0, -1.2, 0.8, 1.2), 60).convert("RGB")


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 16)
    chunk += (
        struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def gif_with_frame_size(frames: list[Image.Image], index: int, width: int, height: int) -> bytes:
    """An animated GIF whose frame ``index`` claims another size in its descriptor."""
    data = bytearray(encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    seen = 0
    while data[pos] != 0x3B:
        if data[pos] == 0x21:
            pos += 2
        else:
            if seen == index:
                struct.pack_into("<HH", data, pos + 5, width, height)
                return bytes(data)
            seen += 1
            flags = data[pos + 9]
            pos += 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    raise AssertionError("frame not found")


def jpeg_with_exif(image: Image.Image, exif: bytes) -> bytes:
    data = encode(image, "JPEG")
    segment = b"Exif\x00\x00" + exif
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + data[2:]


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()[6:]  # tobytes() starts with the "Exif\0\0" header


@dataclass
class Case:
    name: str
    data: bytes
    reason: Reason | None  # None: decodes; too-small is a verify decision, not a decode one
    allowed: tuple[Reason, ...] = ()


def hostile_corpus() -> list[Case]:
    jpeg = encode(photo((400, 300)), "JPEG", quality=90)
    png = encode(photo((200, 150)), "PNG")
    frames = [Image.new("L", (40, 30), v) for v in (10, 120, 240)]
    palette = Image.new("P", (64, 48), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(0, (0, 0, 32, 48))
    gray16 = Image.new("I;16", (64, 48), 32768)
    cases = [
        Case("empty.jpg", b"", Reason.empty),
        Case("page.jpg", b"<!doctype html><html><body>Not found</body></html>", Reason.not_image),
        Case("bomb.png", png_header_only(100_000, 100_000), Reason.bomb),
        Case("gif-frame-bomb.gif", gif_with_frame_size(frames, 1, 30_000, 30_000), Reason.bomb),
        Case(
            "bad-exif.jpg", jpeg_with_exif(photo(), b"MM\x00*\x00\x00\xff\xff" + b"\x00" * 7), None
        ),
        Case("cmyk.jpg", encode(photo().convert("CMYK"), "JPEG"), None),
        Case("gray16.png", encode(gray16, "PNG"), None),
        Case("palette-transparent.png", encode(palette, "PNG", transparency=0), None),
        Case("rotated.jpg", jpeg_with_exif(photo((200, 100)), exif_orientation(6)), None),
        Case(
            "animated.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), None
        ),
        Case("one-pixel.png", encode(Image.new("RGB", (1, 1), "red"), "PNG"), None),
        Case("png-named.jpg", png, None),
        Case("photo.webp", encode(photo(), "WEBP"), None),
        Case("photo.bmp", encode(photo(), "BMP"), None),
        Case("la.png", encode(Image.new("LA", (40, 30), (100, 0)), "PNG"), None),
        Case(
            "vector.svg",
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
            Reason.unsupported,
        ),
        Case("doc.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", Reason.unsupported),
        Case("layers.psd", b"8BPS\x00\x01" + b"\x00" * 40, Reason.unsupported),
        Case("scan.tif", encode(photo(), "TIFF"), Reason.unsupported),
    ]
    for cut in (4, 40, len(jpeg) // 3, len(jpeg) // 2, len(jpeg) - 2):
        header = cut < 100
        cases.append(
            Case(f"jpeg-cut-{cut}.jpg", jpeg[:cut], Reason.truncated, (Reason.corrupt,) * header)
        )
    for cut in (30, 60, len(png) // 2, len(png) - 40):
        header = cut < 100
        cases.append(
            Case(f"png-cut-{cut}.png", png[:cut], Reason.truncated, (Reason.corrupt,) * header)
        )
    return cases


@pytest.mark.parametrize("case", hostile_corpus(), ids=lambda c: c.name)
def test_hostile_file_gets_the_right_outcome(case: Case) -> None:
    if case.reason is None:
        decoded = decode(case.data, LIMITS)
        assert decoded.image.mode == "RGB"
        assert max(decoded.image.size) <= LIMITS.normal_max_side
        return
    with pytest.raises(Rejected) as caught:
        decode(case.data, LIMITS)
    assert caught.value.reason in (case.reason, *case.allowed)


def test_exif_rotation_is_applied_to_pixels_and_sides() -> None:
    decoded = decode(jpeg_with_exif(photo((200, 100)), exif_orientation(6)), LIMITS)
    assert (decoded.width, decoded.height) == (100, 200)
    assert decoded.image.height > decoded.image.width


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    gray16 = Image.new("I;16", (64, 48), 32768)
    pixel = decode(encode(gray16, "PNG"), LIMITS).image.getpixel((10, 10))
    assert pixel == (127, 127, 127) or pixel == (128, 128, 128)


def test_transparent_palette_becomes_white() -> None:
    palette = Image.new("P", (64, 48), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(0, (0, 0, 32, 48))
    image = decode(encode(palette, "PNG", transparency=0), LIMITS).image
    assert image.getpixel((5, 5)) == (255, 255, 255)
    assert image.getpixel((60, 5)) == (255, 0, 0)


def test_animated_gif_uses_first_frame_and_caps_frames() -> None:
    frames = [Image.new("L", (40, 30), v) for v in (10, 120, 240)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = decode(data, LIMITS)
    assert decoded.frames == 3
    assert decoded.image.convert("L").getpixel((5, 5)) == 10
    assert gif_frames(data, 100)[0] == 3
    with pytest.raises(Rejected) as caught:
        decode(data, DecodeLimits(max_frames=2, normal_max_side=64))
    assert caught.value.reason is Reason.frames


def test_large_jpeg_is_draft_decoded_to_the_normal_size() -> None:
    decoded = decode(encode(photo((1200, 600)), "JPEG"), DecodeLimits(normal_max_side=256))
    assert (decoded.width, decoded.height, decoded.format) == (1200, 600, "JPEG")
    assert decoded.image.size == (256, 128)


# Functions run by pool children; defined at module level so that they can be pickled.


def crash_on(item: str) -> str:
    if item == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if item == "exit":
        os._exit(3)
    if item == "hog":
        bytearray(1 << 30)
    if item == "sleep":
        time.sleep(30)
    if item == "spin":
        while True:
            pass
    if item == "raise":
        raise ValueError("not the image's fault")
    return f"{item}:{os.getpid()}"


def test_pool_survives_crashes_exits_and_memory_hogs() -> None:
    items = ["a", "segfault", "b", "exit", "c", "hog", "d", "raise", "e", "f"]
    limits = DecodeLimits(memory_bytes=256 << 20, cpu_seconds=20)
    with DecoderPool(crash_on, workers=2, limits=limits) as pool:
        outcomes = {o.item: o for o in pool.imap_unordered(items)}
    assert set(outcomes) == set(items)
    assert outcomes["segfault"].failure is Reason.crashed
    assert outcomes["exit"].failure is Reason.crashed
    assert outcomes["hog"].failure is Reason.memory
    assert outcomes["raise"].error is not None and "ValueError" in outcomes["raise"].error
    for item in "abcdef":
        result = outcomes[item].result
        assert result is not None and result.startswith(f"{item}:")


def test_pool_kills_stuck_and_spinning_decoders() -> None:
    with DecoderPool(crash_on, workers=2, limits=DecodeLimits(cpu_seconds=1)) as pool:
        outcomes = {o.item: o for o in pool.imap_unordered(["sleep", "a", "spin", "b"])}
    assert outcomes["sleep"].failure is Reason.timeout
    assert outcomes["spin"].failure in (Reason.timeout, Reason.crashed)
    assert outcomes["a"].result and outcomes["b"].result


def test_cpu_limit_kills_a_spinning_child_on_its_own() -> None:
    pool = DecoderPool(crash_on, workers=1, limits=DecodeLimits(cpu_seconds=1))
    pool.wall_seconds = 30.0  # only the kernel's RLIMIT_CPU can stop it now
    with pool:
        outcomes = {o.item: o for o in pool.imap_unordered(["spin", "a"])}
    assert outcomes["spin"].failure is Reason.crashed
    assert outcomes["a"].result


def test_pool_recycles_children() -> None:
    with DecoderPool(crash_on, workers=1, max_tasks=2) as pool:
        results = [o.result for o in pool.imap_unordered(["a", "b", "c", "d", "e"])]
    pids = {r.split(":")[1] for r in results if r}
    assert len(results) == 5 and len(pids) == 3
