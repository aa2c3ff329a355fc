"""The store, the same behaviour from the local directory and from an S3-compatible bucket
(moto's server on 127.0.0.1); and what a second machine sees of a shared bucket."""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from core.config import Settings
from core.s3store import S3Store, parse_store_url
from core.store import ImageStore, LocalStore, image_key, image_store, sha256_bytes
from tests.services import S3Server

_PREFIXES = itertools.count()

MakeStore = Callable[[Path], ImageStore]


@pytest.fixture(params=["local", "s3"])
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """A store as one machine sees it, from its own data directory: the local kind on the
    folder, or every machine's view of one bucket prefix."""
    if request.param == "local":
        root = tmp_path / "shared"
        return lambda _data_dir: LocalStore(root)
    server: S3Server = request.getfixturevalue("s3_server")
    prefix = f"test-{next(_PREFIXES)}"
    return lambda data_dir: image_store(server.settings(data_dir, prefix))


def test_images_are_stored_under_their_hash_and_read_back(
    machine: MakeStore, tmp_path: Path
) -> None:
    store = machine(tmp_path / "a")
    data = b"\x89PNG raw bytes"
    sha = store.put(data)
    assert sha == sha256_bytes(data)
    assert store.put(data) == sha  # the same bytes again: the same name, nothing new
    store.put(b"small jpeg", "thumb", sha256=sha)
    assert store.read(sha) == data and store.read(sha, "thumb") == b"small jpeg"
    assert store.exists(sha, "thumb") and not store.exists(sha, "normal")
    with pytest.raises(FileNotFoundError):
        store.read(sha, "normal")


def test_a_second_machine_reads_what_the_first_wrote_as_local_files(
    machine: MakeStore, tmp_path: Path
) -> None:
    first, second = machine(tmp_path / "a"), machine(tmp_path / "b")
    shas = [first.put(f"image {n}".encode(), "normal", sha256=f"{n:064x}") for n in range(3)]
    found = second.fetch_many([*shas, "f" * 64], "normal")
    assert sorted(found) == shas  # the absent one is left out
    assert found[shas[1]].read_bytes() == b"image 1"
    # A model written at its staging place is read on the other machine from a file.
    onnx = first.staging("models/7/model.onnx")
    onnx.write_bytes(b"onnx graph")
    first.put_file("models/7/model.onnx", onnx)
    assert second.get_file("models/7/model.onnx").read_bytes() == b"onnx graph"
    with pytest.raises(FileNotFoundError):
        second.get_file("models/8/model.onnx")


def test_uploads_move_in_and_are_deleted_once_used(machine: MakeStore, tmp_path: Path) -> None:
    api, worker = machine(tmp_path / "api"), machine(tmp_path / "worker")
    staged = api.staging("uploads/abc.zip")
    staged.write_bytes(b"PK zip")
    api.put_file("uploads/abc.zip", staged, keep=False)
    assert worker.get_file("uploads/abc.zip").read_bytes() == b"PK zip"
    worker.delete("uploads/abc.zip")
    assert not api.has("uploads/abc.zip") and not worker.has("uploads/abc.zip")


def test_listing_names_files_right_under_a_prefix_with_sizes(
    machine: MakeStore, tmp_path: Path
) -> None:
    store = machine(tmp_path / "a")
    store.put_bytes("projects/1/weights/b.safetensors", b"12345")
    store.put_bytes("projects/1/weights/a.safetensors", b"1")
    store.put_bytes("projects/1/weights/deeper/c.safetensors", b"1")
    store.put_bytes("projects/12/weights/other.safetensors", b"1")
    assert store.listing("projects/1/weights") == [("a.safetensors", 1), ("b.safetensors", 5)]
    assert store.listing("projects/2/weights") == []


def test_replaced_weights_are_read_anew_on_another_machine(
    machine: MakeStore, tmp_path: Path
) -> None:
    api, worker = machine(tmp_path / "api"), machine(tmp_path / "worker")
    api.put_bytes("projects/1/weights/body.safetensors", b"first")
    assert worker.get_file("projects/1/weights/body.safetensors").read_bytes() == b"first"
    api.put_bytes("projects/1/weights/body.safetensors", b"second")
    assert worker.get_file("projects/1/weights/body.safetensors").read_bytes() == b"second"


def test_streams_come_in_chunks_with_their_size(machine: MakeStore, tmp_path: Path) -> None:
    store = machine(tmp_path / "a")
    data = bytes(range(256)) * 10_000  # 2.5 MB: more than one chunk
    store.put_bytes("models/1/weights.safetensors", data)
    chunks, size = store.open_stream("models/1/weights.safetensors")
    parts = list(chunks)
    assert size == len(data) and len(parts) > 1 and b"".join(parts) == data
    with pytest.raises(FileNotFoundError):
        store.open_stream("models/2/weights.safetensors")


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../secret.key", "models/../../x", "a//b", "a\\b"]
)
def test_keys_never_leave_the_store(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="not a store key"):
        LocalStore(tmp_path).get_file(key)


def test_the_local_store_keeps_the_data_directory_layout(tmp_path: Path) -> None:
    store = image_store(Settings(data_dir=tmp_path))
    sha = store.put(b"bytes")
    assert (tmp_path / "images" / "raw" / sha[:2] / sha).read_bytes() == b"bytes"
    assert store.local_path(image_key(sha)) == tmp_path / image_key(sha)


def test_a_bucket_url_names_bucket_and_prefix(tmp_path: Path) -> None:
    assert parse_store_url("s3://winnow/prod/images") == ("winnow", "prod/images")
    assert parse_store_url("s3://winnow") == ("winnow", "")
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        parse_store_url("/data/images")
    store = image_store(Settings(data_dir=tmp_path, store_url="s3://b/p", store_region="x"))
    assert isinstance(store, S3Store) and store.staging_root == tmp_path / "cache"
    assert store.local_path("models/1/model.onnx") is None  # sent by streaming, not by path


def test_a_bucket_store_crosses_into_child_processes(tmp_path: Path, s3_server: S3Server) -> None:
    # Verification hands the store to its decoder children, which pickle what they get.
    store = image_store(s3_server.settings(tmp_path, "pickled"))
    sha = store.put(b"bytes")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.read(sha) == b"bytes"
