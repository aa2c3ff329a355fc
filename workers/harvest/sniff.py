"""Recognising image content by its first bytes, whatever the server's Content-Type says.

Image search results point at HTML error pages, login walls and SVGs as often as at
photos; the magic bytes catch those cheaply while the download is still streaming.
The real decode happens later in the verify job.
"""

from __future__ import annotations

# Bytes needed to recognise every format below (the ISO-BMFF brand sits at offset 8).
SNIFF_BYTES = 16

_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"\x00\x00\x01\x00", "ico"),
)

# ISO base media file brands of still images (AVIF, HEIF/HEIC).
_FTYP_BRANDS = {
    b"avif": "avif",
    b"avis": "avif",
    b"heic": "heic",
    b"heix": "heic",
    b"mif1": "heif",
    b"msf1": "heif",
}


def sniff_image(head: bytes) -> str | None:
    """Name the image format that ``head`` starts with, or None when it is not an image."""
    for prefix, name in _PREFIXES:
        if head.startswith(prefix):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12])
    return None


def describe(head: bytes) -> str:
    """A short, printable hint at what arrived instead of an image (for failure reasons)."""
    text = head[:64].lstrip()
    lowered = text.lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "HTML page"
    if lowered.startswith((b"<?xml", b"<svg")):
        return "XML or SVG"
    if lowered.startswith((b"{", b"[")):
        return "JSON"
    if not head:
        return "empty body"
    return "starts with " + head[:8].hex(" ")
