"""The whole loop through REST with a real worker: SQLite + SQLite broker, and Postgres + Redis."""

from __future__ import annotations

import csv
import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import Stack
from tests.imagegen import imagefolder_zip, picture


class _ImageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "img":
            body = picture(parts[1], int(parts[2].split(".")[0]))
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
        else:
            body = b"not here"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_whole_loop(stack: Stack, image_server: str) -> None:
    c = stack.client
    created = c.post(
        "/api/projects",
        json={
            "name": "colours",
            "classes": [{"name": "red", "queries": ["red things"]}, {"name": "blue"}],
        },
    )
    assert created.status_code == 201, created.text
    pid = created.json()["id"]

    # Import: an ImageFolder zip with one broken file, then a URL list.
    broken = picture("red", 999)[:300]
    archive = imagefolder_zip({"red": 14, "blue": 14}, {"dataset/red/broken.jpg": broken})
    job = c.post(
        f"/api/projects/{pid}/imports/zip", files={"file": ("data.zip", archive, "application/zip")}
    )
    assert job.status_code == 202, job.text
    done = stack.wait_job(pid, job.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["added"] == 29
    # Verified while importing: the broken file is rejected with its reason.
    verified = done["result"]["verify"]
    assert (verified["verified"], verified["ok"], verified["rejected"]) == (29, 28, 1)

    urls = "\n".join(f"{image_server}/img/blue/{n}.jpg" for n in range(100, 104))
    urls += f"\n{image_server}/missing.jpg\n"
    job = c.post(
        f"/api/projects/{pid}/imports/urls",
        files={"files": ("urls_blue.txt", urls.encode(), "text/plain")},
    )
    assert job.status_code == 202, job.text
    done = stack.wait_job(pid, job.json()["id"])
    assert done["status"] == "succeeded", done
    failures = done["result"]["failures"]
    assert [f["url"] for f in failures] == [f"{image_server}/missing.jpg"]
    assert "404" in failures[0]["reason"]
    assert done["result"]["verify"]["ok"] == 4

    # Plain image files: added at once, verified by the job the upload starts.
    files = [("files", (f"{n}.jpg", picture("red", n), "image/jpeg")) for n in (500, 501)]
    upload = c.post(f"/api/projects/{pid}/imports/images", files=files, data={"label": "red"})
    assert upload.status_code == 201, upload.text
    assert upload.json()["added"] == 2 and upload.json()["verify_job_id"]
    done = stack.wait_job(pid, upload.json()["verify_job_id"])
    assert done["status"] == "succeeded" and done["result"]["ok"] == 2, done

    # A verify job rechecks everything; the verdicts stand.
    done = stack.run_job(pid, "verify", {"recheck": True})
    assert done["status"] == "succeeded", done
    assert (done["result"]["verified"], done["result"]["ok"]) == (35, 34)
    rejected = c.get(f"/api/projects/{pid}/images", params={"state": "rejected"}).json()
    assert rejected["total"] == 1
    assert rejected["items"][0]["reject_reason"]
    ok = c.get(f"/api/projects/{pid}/images", params={"state": "ok", "limit": 1000}).json()
    assert ok["total"] == 34

    # Train a tiny model on the CPU; per-epoch metrics are stored.
    done = stack.run_job(
        pid,
        "train",
        {
            "arch": "resnet18",
            "pretrained": False,
            "image_size": 32,
            "batch_size": 16,
            "epochs": 1,
            "freeze_epochs": 1,
            "lr": 1e-3,
            "augment": False,
        },
    )
    assert done["status"] == "succeeded", done
    model_id = done["result"]["model_version_id"]
    model = c.get(f"/api/projects/{pid}/models/{model_id}").json()
    assert len(model["metrics"]) == 2 and model["status"] == "ready"
    for epoch in model["metrics"]:
        assert {"train_loss", "valid_loss", "error_rate"} <= set(epoch)

    # Rank every image by loss under that model.
    done = stack.run_job(pid, "rank", {"model_version_id": model_id})
    assert done["status"] == "succeeded", done
    top = c.get(f"/api/projects/{pid}/images", params={"state": "ok", "sort": "-loss"}).json()
    losses = [i["loss"] for i in top["items"]]
    assert len(losses) == 34 and None not in losses
    assert losses == sorted(losses, reverse=True)

    # Clean: relabel, a stale edit, delete, restore, undo.
    first = top["items"][0]
    url = f"/api/projects/{pid}/images/{first['id']}"
    new_label = "blue" if first["label"] == "red" else "red"
    relabelled = c.patch(url, json={"version": first["version"], "label": new_label})
    assert relabelled.status_code == 200, relabelled.text
    assert relabelled.json()["label"] == new_label
    stale = c.patch(url, json={"version": first["version"], "action": "delete"})
    assert stale.status_code == 409
    assert stale.json()["detail"]["image"]["label"] == new_label

    second = top["items"][1]
    url2 = f"/api/projects/{pid}/images/{second['id']}"
    deleted = c.patch(url2, json={"version": second["version"], "action": "delete"}).json()
    assert deleted["state"] == "deleted"
    restored = c.patch(url2, json={"version": deleted["version"], "action": "restore"}).json()
    assert restored["state"] == "ok"
    deleted = c.patch(url2, json={"version": restored["version"], "action": "delete"}).json()

    events = c.get(f"/api/projects/{pid}/events", params={"image_id": first["id"]}).json()
    # Newest first: the reviewer's relabel, then verification's acceptance (by the system).
    assert [(e["action"], e["user"]) for e in events] == [("relabel", "admin"), ("accept", None)]
    undone = c.post(f"/api/projects/{pid}/events/{events[0]['id']}/undo")
    assert undone.status_code == 201, undone.text
    assert c.get(url).json()["label"] == first["label"]

    # Export: fastai's cleaned.csv holds the ok, labelled images; the deleted one is out.
    exported = c.get(f"/api/projects/{pid}/export/cleaned.csv")
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 33
    assert {r["label"] for r in rows} == {"red", "blue"}
    assert all(r["name"].startswith(f"{r['label']}/") for r in rows)
    archive_resp = c.get(f"/api/projects/{pid}/export/imagefolder.zip")
    names = zipfile.ZipFile(io.BytesIO(archive_resp.content)).namelist()
    assert "cleaned.csv" in names
    assert {r["name"] for r in rows} <= set(names)


def test_failed_job_is_visible_and_worker_keeps_serving(stack: Stack) -> None:
    c = stack.client
    pid = c.post("/api/projects", json={"name": "empty", "classes": [{"name": "a"}]}).json()["id"]
    failed = stack.run_job(pid, "train", {"pretrained": False, "epochs": 1, "image_size": 32})
    assert failed["status"] == "failed"
    assert failed["error"] and failed["message"]
    # The same worker takes the next job.
    archive = imagefolder_zip({"red": 2})
    job = c.post(f"/api/projects/{pid}/imports/zip", files={"file": ("d.zip", archive)})
    assert stack.wait_job(pid, job.json()["id"])["status"] == "succeeded"
    assert stack.worker.alive()
