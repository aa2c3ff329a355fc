"""The store in an S3-compatible bucket (AWS S3, MinIO, Ceph...), shared by every machine.

Selected by ``WINNOW_STORE_URL=s3://bucket/prefix``. Files another process needs on disk
(training images, model weights, ONNX files, zip uploads) are copied into this machine's
cache directory once: images are content-addressed and model files and uploads are written
once under new keys, so a cached copy never goes stale. Body weights uploaded into a
project may be replaced under the same name, so those are fetched again each time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from core.config import Settings
from core.store import CHUNK, ImageStore, Variant, cache_dir, check_key, image_key

# Keys whose file may be replaced: never served from the cache.
MUTABLE_PREFIXES = ("projects/",)
# Parallel downloads when a job gathers its images (S3 answers each request in milliseconds;
# one at a time would leave a training job waiting on round trips).
FETCH_THREADS = 16


def _missing(error: ClientError) -> bool:
    code = str(error.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


@dataclass(frozen=True)
class Endpoint:
    """How to reach the bucket; empty strings leave the choice to boto3 (AWS_* variables,
    an instance role, the default region)."""

    url: str = ""
    region: str = ""
    key_id: str = ""
    secret: str = ""


class S3Store(ImageStore):
    """Picklable (an endpoint, names and a folder): verification hands the store to its
    decoder children, and each process makes its own client."""

    def __init__(self, endpoint: Endpoint, bucket: str, prefix: str, cache: Path) -> None:
        self.endpoint, self.bucket, self.cache = endpoint, bucket, cache
        self.prefix = prefix.strip("/")

    @property
    def client(self) -> Any:
        return _client(self.endpoint, os.getpid())

    def ensure_bucket(self) -> bool:
        """Make the bucket when there is none (a fresh MinIO); True when it made it."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if not _missing(error):
                raise
            self.client.create_bucket(Bucket=self.bucket)
            return True
        return False

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _cached(self, key: str) -> Path:
        return self.cache / check_key(key)

    def has(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if _missing(error):
                return False
            raise
        return True

    def get_bytes(self, key: str) -> bytes:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if _missing(error):
                raise FileNotFoundError(key) from error
            raise
        data: bytes = answer["Body"].read()
        return data

    def put_bytes(self, key: str, data: bytes) -> None:
        # A PUT is atomic in S3: readers see the old object or the whole new one.
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_file(self, key: str) -> Path:
        cached = self._cached(key)
        if cached.is_file() and not key.startswith(MUTABLE_PREFIXES):
            return cached
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".tmp-")
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self._key(key), tmp)
            os.replace(tmp, cached)
        except ClientError as error:
            Path(tmp).unlink(missing_ok=True)
            if _missing(error):
                raise FileNotFoundError(key) from error
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return cached

    @property
    def staging_root(self) -> Path:
        return self.cache

    def put_file(self, key: str, path: Path, keep: bool = True) -> None:
        # boto3's managed transfer: multipart and parallel for large files.
        self.client.upload_file(str(path), self.bucket, self._key(key))
        # A file written at its staging place stays as this machine's cached copy.
        if not keep:
            path.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        self._cached(key).unlink(missing_ok=True)

    def listing(self, prefix: str) -> list[tuple[str, int]]:
        folder = self._key(prefix) + "/"
        found = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=folder, Delimiter="/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                name = item["Key"][len(folder) :]
                if name and not name.startswith("."):
                    found.append((name, int(item["Size"])))
        return sorted(found)

    def open_stream(self, key: str) -> tuple[Iterator[bytes], int]:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if _missing(error):
                raise FileNotFoundError(key) from error
            raise
        body = answer["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        return chunks(), int(answer["ContentLength"])

    def fetch_many(self, shas: Iterable[str], variant: Variant) -> dict[str, Path]:
        def one(sha: str) -> tuple[str, Path | None]:
            try:
                return sha, self.get_file(image_key(sha, variant))
            except FileNotFoundError:
                return sha, None

        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            return {sha: path for sha, path in pool.map(one, list(shas)) if path is not None}


@lru_cache(maxsize=8)
def _client(endpoint: Endpoint, pid: int) -> Any:
    """One client per endpoint and process: making one costs tens of milliseconds, and a
    client must not cross a fork (its connection pool would be shared)."""
    config = Config(
        max_pool_connections=FETCH_THREADS * 2,
        retries={"max_attempts": 5, "mode": "standard"},
        # Path-style requests (host/bucket/key) work with MinIO and any endpoint's DNS.
        s3={"addressing_style": "path"} if endpoint.url else None,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint.url or None,
        region_name=endpoint.region or None,
        aws_access_key_id=endpoint.key_id or None,
        aws_secret_access_key=endpoint.secret or None,
        config=config,
    )


def parse_store_url(url: str) -> tuple[str, str]:
    """s3://bucket/prefix -> (bucket, prefix)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"WINNOW_STORE_URL must look like s3://bucket/prefix, not {url!r}")
    return parsed.netloc, parsed.path.strip("/")


def s3_store(settings: Settings) -> S3Store:
    bucket, prefix = parse_store_url(settings.store_url)
    endpoint = Endpoint(
        settings.store_endpoint_url,
        settings.store_region,
        settings.store_access_key_id,
        settings.store_secret_access_key,
    )
    return S3Store(endpoint, bucket, prefix, cache_dir(settings))
