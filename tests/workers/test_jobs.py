"""Jobs with a real worker: cancel while queued and while running, a worker killed mid-job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.imagegen import imagefolder_zip
from tests.services import WorkerProcess

LONG_TRAIN = {
    "pretrained": False,
    "image_size": 32,
    "batch_size": 4,
    "epochs": 500,
    "freeze_epochs": 0,
    "lr": 1e-3,
    "augment": True,
}


@pytest.fixture
def stack_env_overrides() -> dict[str, str]:
    # Heartbeats every half second; a job silent for 2 s is considered orphaned.
    return {"WINNOW_JOB_STALE_AFTER": "2"}


def _project_with_images(stack: Stack) -> int:
    c = stack.client
    pid = c.post("/api/projects", json={"name": "p"}).json()["id"]
    job = c.post(
        f"/api/projects/{pid}/imports/zip",
        files={"file": ("d.zip", imagefolder_zip({"red": 12, "blue": 12}))},
    ).json()
    assert stack.wait_job(pid, job["id"])["status"] == "succeeded"
    return int(pid)


def _wait_running(stack: Stack, pid: int, job_id: int, attempts: int = 1) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = stack.client.get(f"/api/projects/{pid}/jobs/{job_id}").json()
        if job["status"] == "running" and job["done"] > 0 and job["attempts"] == attempts:
            return
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never got going: {job}\n{stack.worker.log()[-3000:]}")


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_cancel_queued_and_running(stack: Stack) -> None:
    c = stack.client
    pid = _project_with_images(stack)
    long = c.post(f"/api/projects/{pid}/jobs", json={"kind": "train", "params": LONG_TRAIN}).json()
    # The worker runs one job at a time, so this one waits in the queue.
    queued = c.post(f"/api/projects/{pid}/jobs", json={"kind": "verify"}).json()
    _wait_running(stack, pid, long["id"])
    cancelled = c.post(f"/api/projects/{pid}/jobs/{queued['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"

    asked = time.monotonic()
    assert c.post(f"/api/projects/{pid}/jobs/{long['id']}/cancel").json()["cancel_requested"]
    final = stack.wait_job(pid, long["id"], timeout=60)
    assert final["status"] == "cancelled"
    assert time.monotonic() - asked < 15
    # Cancelling a finished job is refused; the worker carries on with new work.
    assert c.post(f"/api/projects/{pid}/jobs/{long['id']}/cancel").status_code == 409
    assert stack.run_job(pid, "verify")["status"] == "succeeded"
    assert stack.client.get(f"/api/projects/{pid}/jobs/{queued['id']}").json()["status"] == (
        "cancelled"
    )


def test_killed_worker_loses_no_job(stack: Stack) -> None:
    c = stack.client
    pid = _project_with_images(stack)
    job = c.post(f"/api/projects/{pid}/jobs", json={"kind": "train", "params": LONG_TRAIN}).json()
    _wait_running(stack, pid, job["id"])
    stack.worker.kill_hard()
    time.sleep(2.5)  # let the heartbeat go stale
    stack.worker = WorkerProcess(stack.env, stack.worker.log_path.with_suffix(".2.log"))
    # The new worker finds the orphan, queues it again and runs it (second attempt).
    _wait_running(stack, pid, job["id"], attempts=2)
    c.post(f"/api/projects/{pid}/jobs/{job['id']}/cancel")
    assert stack.wait_job(pid, job["id"], timeout=60)["status"] == "cancelled"


@pytest.mark.parametrize("stack", ["postgres-redis"], indirect=True)
def test_a_live_worker_takes_over_from_a_dead_one(stack: Stack, tmp_path: Path) -> None:
    c = stack.client
    pid = _project_with_images(stack)
    job = c.post(f"/api/projects/{pid}/jobs", json={"kind": "train", "params": LONG_TRAIN}).json()
    _wait_running(stack, pid, job["id"])
    # A second worker joins while the first is busy, then the first dies.
    second = WorkerProcess(stack.env, tmp_path / "second.log")
    try:
        deadline = time.monotonic() + 60
        while "ready" not in second.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        stack.worker.kill_hard()
        stack.worker = second
        # No restart: the live worker's watch finds the stale heartbeat and takes the job.
        _wait_running(stack, pid, job["id"], attempts=2)
        c.post(f"/api/projects/{pid}/jobs/{job['id']}/cancel")
        assert stack.wait_job(pid, job["id"], timeout=60)["status"] == "cancelled"
    finally:
        second.stop()
