"""The `winnow` command as a user runs it: serve on the embedded default, demo, createuser."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.services import REPO, ServeProcess, winnow_env

# Real training runs, served processes: seconds each.
pytestmark = pytest.mark.slow

WINNOW = [sys.executable, "-m", "api.cli"]


def test_serve_embedded_default_then_demo(tmp_path: Path) -> None:
    env = winnow_env(tmp_path / "data")
    serve = ServeProcess(env, tmp_path / "serve.log")
    try:
        base = serve.url
        assert httpx.get(f"{base}/api/health").json()["database"] == "sqlite"
        password = serve.admin_password()

        demo = subprocess.run(
            [*WINNOW, "demo", "--per-class", "4"], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert demo.returncode == 0, demo.stderr
        assert "40 digit images in 10 classes" in demo.stdout

        with httpx.Client(base_url=base) as client:
            login = client.post("/api/auth/login", json={"username": "admin", "password": password})
            assert login.status_code == 200
            projects = client.get("/api/projects").json()
            assert [p["counts"] for p in projects] == [{"pending": 40}]
            page = client.get("/")
            assert page.status_code == 200 and "Handwritten digits" in page.text
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
            assert csrf
            pid = projects[0]["id"]
            job = client.post(
                f"/api/projects/{pid}/jobs",
                json={"kind": "verify"},
                headers={"X-CSRF-Token": csrf.group(1)},
            ).json()
            deadline = time.monotonic() + 120
            while job["status"] in ("queued", "running") and time.monotonic() < deadline:
                time.sleep(0.5)
                job = client.get(f"/api/projects/{pid}/jobs/{job['id']}").json()
            assert job["status"] == "succeeded", (job, serve.log()[-3000:])
            assert client.get(f"/api/projects/{pid}").json()["counts"] == {"ok": 40}
    finally:
        serve.stop()


def test_sigterm_to_serve_alone_stops_its_worker(tmp_path: Path) -> None:
    serve = ServeProcess(winnow_env(tmp_path / "data"), tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 90
        while " ready." not in serve.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert " ready." in serve.log(), serve.log()[-3000:]
        # As a process manager stops a service: SIGTERM to serve's own process only.
        os.kill(serve.proc.pid, signal.SIGTERM)
        assert serve.proc.wait(timeout=60) == 0
        assert not serve.group_alive(timeout=15), "the worker outlived serve"
        assert "Warm shutdown" in serve.log()
    finally:
        serve.stop()


def test_createuser_and_migrate(tmp_path: Path) -> None:
    env = winnow_env(tmp_path / "data", WINNOW_NEW_PASSWORD="a-long-password")
    migrate = subprocess.run(
        [*WINNOW, "migrate"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stderr
    made = subprocess.run(
        [*WINNOW, "createuser", "erin", "--admin"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0 and "created user 'erin'" in made.stdout
    again = subprocess.run(
        [*WINNOW, "createuser", "erin"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert again.returncode == 1 and "exists" in again.stderr
    short = subprocess.run(
        [*WINNOW, "createuser", "fay"],
        cwd=REPO,
        env={**env, "WINNOW_NEW_PASSWORD": "short"},
        capture_output=True,
        text=True,
    )
    assert short.returncode == 2
