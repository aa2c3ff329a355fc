"""The store: content-addressed images and every other file that machines share.

Images are named by their SHA-256 and never overwritten or deleted by a cleaning decision.
Three variants per image: the raw download, a normalised RGB copy (what training reads) and a
thumbnail (what the UI shows). Beside them, under keys (relative POSIX paths), the files that
one machine writes and another reads:

    images/<variant>/<aa>/<sha256>[.jpg]   the three variants of an image
    models/<version>/...                   weights, metadata, ONNX, Grad-CAM images
    uploads/<name>.zip                     a zip import, from the API to the worker that imports it
    projects/<id>/weights/<name>           body weights uploaded into a project

Two implementations of one small interface: a directory (the embedded default: a key is a
path under the data directory, as files always were) and an S3-compatible bucket
(core/s3store.py) when workers spread over machines. Code that needs a file on disk (ONNX
Runtime, safetensors, the training decoder) asks for ``get_file``: the directory hands its
own path, the bucket a copy in this machine's cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from core.config import Settings

Variant = Literal["raw", "normal", "thumb"]
CHUNK = 1024 * 1024


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_key(sha256: str, variant: Variant = "raw") -> str:
    suffix = "" if variant == "raw" else ".jpg"
    return f"images/{variant}/{sha256[:2]}/{sha256}{suffix}"


def check_key(key: str) -> str:
    """A key names a file inside the store: relative, no '..', no empty parts, no
    backslashes (one path on every machine and in the bucket)."""
    if any(part in ("", ".", "..") for part in key.split("/")) or "\\" in key:
        raise ValueError(f"not a store key: {key!r}")
    return key


class ImageStore(ABC):
    """Files by key; images by content hash on top."""

    @abstractmethod
    def has(self, key: str) -> bool: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The file's bytes; FileNotFoundError when there is none."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write (or replace) the file, whole: a reader never sees half of it."""

    @abstractmethod
    def get_file(self, key: str) -> Path:
        """A file on this machine with the key's bytes; FileNotFoundError when there is none."""

    @property
    @abstractmethod
    def staging_root(self) -> Path:
        """This machine's folder where files meant for the store are written before
        ``put_file``, at their key: the directory's own root, the bucket's cache."""

    def staging(self, key: str) -> Path:
        """The local path (its folder made) where a file meant for ``key`` is written."""
        path = self.staging_root / check_key(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @abstractmethod
    def put_file(self, key: str, path: Path, keep: bool = True) -> None:
        """Store a local file under ``key``; without ``keep`` the local file may go."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def listing(self, prefix: str) -> list[tuple[str, int]]:
        """Names and sizes of the files right under ``prefix``/, by name."""

    @abstractmethod
    def open_stream(self, key: str) -> tuple[Iterator[bytes], int]:
        """The file's bytes in chunks, and its size; FileNotFoundError when there is none."""

    def local_path(self, key: str) -> Path | None:
        """The file itself, where the store is this machine's disk (the web server then sends
        it without reading it through Python); None for remote stores or absent files."""
        return None

    def exists(self, sha256: str, variant: Variant = "raw") -> bool:
        return self.has(image_key(sha256, variant))

    def put(self, data: bytes, variant: Variant = "raw", sha256: str | None = None) -> str:
        """Store bytes under their hash (or the given one for derived variants); return it.
        Content-addressed: bytes already there are not written again."""
        digest = sha256 or sha256_bytes(data)
        key = image_key(digest, variant)
        if not self.has(key):
            self.put_bytes(key, data)
        return digest

    def read(self, sha256: str, variant: Variant = "raw") -> bytes:
        return self.get_bytes(image_key(sha256, variant))

    def fetch_many(self, shas: Iterable[str], variant: Variant) -> dict[str, Path]:
        """Local files of those images that the store has, by hash (absent ones left out)."""
        found = {}
        for sha in shas:
            try:
                found[sha] = self.get_file(image_key(sha, variant))
            except FileNotFoundError:
                continue
        return found


class LocalStore(ImageStore):
    """A directory of this machine: the embedded default, and one volume shared by containers."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def get_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a file, and two writers of
        # the same content race harmlessly.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_file(self, key: str) -> Path:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return path

    def local_path(self, key: str) -> Path | None:
        path = self.path(key)
        return path if path.is_file() else None

    @property
    def staging_root(self) -> Path:
        return self.root

    def put_file(self, key: str, path: Path, keep: bool = True) -> None:
        target = self.staging(key)
        if path.resolve() == target.resolve():
            return
        if keep:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            os.close(fd)
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        else:
            shutil.move(path, target)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def listing(self, prefix: str) -> list[tuple[str, int]]:
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        return sorted(
            (p.name, p.stat().st_size)
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".")
        )

    def open_stream(self, key: str) -> tuple[Iterator[bytes], int]:
        path = self.get_file(key)

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as fh:
                while block := fh.read(CHUNK):
                    yield block

        return chunks(), path.stat().st_size

    def fetch_many(self, shas: Iterable[str], variant: Variant) -> dict[str, Path]:
        paths = {sha: self.path(image_key(sha, variant)) for sha in shas}
        return {sha: path for sha, path in paths.items() if path.is_file()}


def cache_dir(settings: Settings) -> Path:
    return settings.store_cache_dir or settings.data_dir / "cache"


def image_store(settings: Settings) -> ImageStore:
    """The deployment's store: the one place that says where images and models live."""
    if not settings.store_url:
        return LocalStore(settings.data_dir)
    # Imported here: boto3 loads only where a bucket is configured.
    from core.s3store import s3_store

    return s3_store(settings)
