"""A deployment over several machines, as processes: Postgres, Redis, the API (uvicorn) and
two workers on different queues, each with a data directory of its own, sharing nothing
but the database, the broker and an S3-compatible bucket (moto's server on 127.0.0.1).

The loop passes through it (URL import, verify, train, rank), each job on the worker of its
queue as the job records say; the review page shows thumbnails the API reads from the
bucket; /metrics counts the run's jobs; /api/ready follows Postgres down and up again."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.imagegen import picture
from tests.services import (
    PostgresServer,
    RedisServer,
    S3Server,
    ServeProcess,
    WorkerProcess,
    winnow_env,
)
from tests.workers.harvest.server import LocalServer, Reply, Request

pytestmark = [pytest.mark.slow, pytest.mark.stack]

PASSWORD = "topology-admin-password"
TINY_TRAINING = {
    "arch": "resnet18",
    "pretrained": False,
    "image_size": 32,
    "epochs": 1,
    "freeze_epochs": 0,
    "batch_size": 16,
    "lr": 0.002,
    "augment": False,
}


@dataclass
class Deployment:
    api: ServeProcess
    client: httpx.Client
    cpu: WorkerProcess
    gpu: WorkerProcess
    postgres: PostgresServer
    s3: S3Server
    prefix: str
    data_dirs: dict[str, Path]

    def run(self, pid: int, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        answer = self.client.post(
            f"/api/projects/{pid}/jobs", json={"kind": kind, "params": params}
        )
        assert answer.status_code == 202, answer.text
        return self.wait(pid, answer.json()["id"])

    def wait(self, pid: int, job_id: int, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.client.get(f"/api/projects/{pid}/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                assert job["status"] == "succeeded", f"{job}\n{self.logs()}"
                return job
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} did not end in {timeout}s\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{log[-3000:]}"
            for name, log in (
                ("api", self.api.log()),
                ("cpu", self.cpu.log()),
                ("gpu", self.gpu.log()),
            )
        )


def _image(request: Request) -> Reply:
    colour, number = request.path.split("/")[2:4]
    return Reply(body=picture(colour, int(number)), headers={"Content-Type": "image/jpeg"})


@pytest.fixture
def deployment(
    tmp_path: Path, redis_server: RedisServer, s3_server: S3Server
) -> Iterator[Deployment]:
    try:
        postgres = PostgresServer()
    except FileNotFoundError as exc:
        pytest.skip(f"Postgres not available here: {exc}")
    broker = redis_server.url(15)
    redis.Redis.from_url(broker).flushdb()
    prefix = f"topology-{time.monotonic_ns()}"
    shared = {
        "WINNOW_DATABASE_URL": postgres.create_database(),
        "WINNOW_BROKER_URL": broker,
        "WINNOW_SECRET_KEY": "topology-secret",
        "WINNOW_FETCH_ALLOW": "127.0.0.1",
        **s3_server.env(prefix),
    }
    dirs = {name: tmp_path / name for name in ("api", "cpu", "gpu")}
    api = cpu = gpu = None
    try:
        # The API migrates on start; the workers come after, as compose starts them.
        api = ServeProcess(
            winnow_env(dirs["api"], WINNOW_ADMIN_PASSWORD=PASSWORD, **shared),
            tmp_path / "api.log",
            "--no-worker",
        )
        cpu = WorkerProcess(winnow_env(dirs["cpu"], **shared), tmp_path / "cpu.log", "cpu")
        gpu_env = winnow_env(dirs["gpu"], WINNOW_LOG_FORMAT="json", **shared)
        gpu = WorkerProcess(gpu_env, tmp_path / "gpu.log", "gpu,browser")
        login = {"username": "admin", "password": PASSWORD}
        token = httpx.post(f"{api.url}/api/auth/tokens", json={**login, "name": "t"})
        assert token.status_code == 201, token.text
        auth = {"Authorization": f"Bearer {token.json()['token']}"}
        with httpx.Client(base_url=api.url, timeout=60, headers=auth) as client:
            yield Deployment(api, client, cpu, gpu, postgres, s3_server, prefix, dirs)
    finally:
        for process in (gpu, cpu, api):
            if process is not None:
                process.stop()
        postgres.stop()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_loop_runs_across_machines_that_share_only_the_store(
    deployment: Deployment,
) -> None:
    d, c = deployment, deployment.client
    pid = c.post("/api/projects", json={"name": "colours"}).json()["id"]

    with LocalServer({"/img/": _image}) as images:
        lists = {
            colour: "\n".join(f"{images.url}/img/{colour}/{n}" for n in range(12))
            for colour in ("red", "blue")
        }
        answer = c.post(
            f"/api/projects/{pid}/imports/urls",
            files=[
                ("files", (f"urls_{colour}.txt", text.encode(), "text/plain"))
                for colour, text in lists.items()
            ],
            data={"verify": "false"},
        )
        assert answer.status_code == 202, answer.text
        imported = d.wait(pid, answer.json()["id"])
    assert imported["result"]["downloaded"] == 24
    verified = d.run(pid, "verify", {})
    trained = d.run(pid, "train", TINY_TRAINING)
    ranked = d.run(pid, "rank", {})
    model = trained["result"]["model_version_id"]

    # Each job ran on the worker of its queue, as its record says.
    host = imported["worker"].split("@")[1]
    assert [j["worker"] for j in (imported, verified)] == [f"cpu@{host}"] * 2
    assert [j["worker"] for j in (trained, ranked)] == [f"gpu+browser@{host}"] * 2

    # Everything the machines exchanged is in the bucket; nothing in their image folders.
    keys = d.s3.keys(d.prefix)
    for variant in ("raw", "normal", "thumb"):
        assert sum(k.startswith(f"{d.prefix}/images/{variant}/") for k in keys) == 24
    assert {f"{d.prefix}/models/{model}/{f}" for f in ("model.onnx", "metadata.json")} <= set(keys)
    assert not any((folder / "images").exists() for folder in d.data_dirs.values())

    # The review page shows thumbnails, which the API streams from the bucket.
    browser = httpx.Client(base_url=d.api.url, timeout=60)
    login = {"username": "admin", "password": PASSWORD}
    assert browser.post("/api/auth/login", json=login).status_code == 200
    page = browser.get(f"/projects/{pid}/review")
    assert page.status_code == 200
    thumbs = re.findall(r'src="(/api/projects/\d+/images/\d+/file\?variant=thumb)"', page.text)
    assert len(thumbs) == 24
    thumb = browser.get(thumbs[0])
    browser.close()
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:2] == b"\xff\xd8"
    # The lean API predicts with the model the GPU worker put in the bucket.
    predicted = c.post(
        f"/api/projects/{pid}/models/{model}/predict",
        files={"files": ("x.jpg", picture("red", 99), "image/jpeg")},
    )
    assert predicted.status_code == 200, predicted.text
    assert set(predicted.json()["predictions"][0]["probabilities"]) == {"red", "blue"}

    # /metrics counts the run's jobs, by kind and by worker.
    samples = _samples(c.get("/metrics").text)
    for kind in ("import_urls", "verify", "train", "rank"):
        assert samples[("winnow_jobs", (("kind", kind), ("state", "succeeded")))] == 1
    cpu_jobs = ("winnow_worker_jobs", (("state", "succeeded"), ("worker", f"cpu@{host}")))
    gpu_jobs = ("winnow_worker_jobs", (("state", "succeeded"), ("worker", f"gpu+browser@{host}")))
    assert samples[cpu_jobs] == samples[gpu_jobs] == 2
    assert samples[("winnow_images", (("state", "ok"),))] == 24
    assert samples[("winnow_queue_messages", (("queue", "gpu"),))] == 0

    # The worker asked for JSON logs writes one object a line.
    records = [json.loads(line) for line in d.gpu.log().splitlines() if line.startswith("{")]
    assert any("succeeded" in r["message"] for r in records), d.gpu.log()[-2000:]

    # Ready follows the database: 503 with the reason while it is down, 200 once it is back.
    assert c.get("/api/ready").status_code == 200
    d.postgres.pause()
    try:
        down = c.get("/api/ready")
        assert down.status_code == 503
        assert down.json()["database"].startswith("unreachable")
    finally:
        d.postgres.resume()
    deadline = time.monotonic() + 20
    while c.get("/api/ready").status_code != 200:
        assert time.monotonic() < deadline, "not ready 20 s after Postgres came back"
        time.sleep(0.5)
