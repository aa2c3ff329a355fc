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

from tests.services import REPO, free_port, wait_for_port

WINNOW = [sys.executable, "-m", "api.cli"]


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINNOW_")}
    return {**env, "WINNOW_DATA_DIR": str(data_dir), **extra}


def test_serve_embedded_default_then_demo(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path / "data")
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [*WINNOW, "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, timeout=120, proc=serve)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/health").json()["database"] == "sqlite"
        output = (tmp_path / "serve.log").read_text()
        password = re.search(r"Created user 'admin' with password: (\S+)", output)
        assert password, output

        demo = subprocess.run(
            [*WINNOW, "demo", "--per-class", "4"], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert demo.returncode == 0, demo.stderr
        assert "40 digit images in 10 classes" in demo.stdout

        with httpx.Client(base_url=base) as client:
            login = client.post(
                "/api/auth/login", json={"username": "admin", "password": password.group(1)}
            )
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
            assert job["status"] == "succeeded", (job, (tmp_path / "serve.log").read_text()[-3000:])
            assert client.get(f"/api/projects/{pid}").json()["counts"] == {"ok": 40}
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
        log.close()


def test_createuser_and_migrate(tmp_path: Path) -> None:
    env = _env(tmp_path / "data", WINNOW_NEW_PASSWORD="a-long-password")
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
