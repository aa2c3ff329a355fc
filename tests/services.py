"""Real services for the tests: Redis, a throw-away Postgres cluster, a Celery worker process."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from api.cli import worker_argv
from core.config import Settings

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _binary(name: str, *extra_dirs: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs:
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    return None


class RedisServer:
    def __init__(self) -> None:
        binary = _binary("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="winnow-redis-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A cluster in a temp dir. initdb refuses to run as root, so as root it runs as 'postgres'."""

    def __init__(self) -> None:
        dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
        initdb = _binary("initdb", *map(str, dirs))
        pg_ctl = _binary("pg_ctl", *map(str, dirs))
        if initdb is None or pg_ctl is None:
            raise FileNotFoundError("Postgres server binaries (initdb, pg_ctl) are not installed")
        self.pg_ctl = pg_ctl
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="winnow-pg-"))
        self.data = self.dir / "data"
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            self.dir.chmod(0o755)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*self.prefix, initdb, "-D", str(self.data), "-A", "trust", "-U", "winnow"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.resume()
        self._count = 0

    def resume(self) -> None:
        """Start the server (again, after ``pause``) on the same port and data."""
        subprocess.run(
            [
                *self.prefix,
                self.pg_ctl,
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "log"),
                "-w",
                "-o",
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def pause(self) -> None:
        """Stop the server, keeping its data (an outage, for tests of what notices it)."""
        subprocess.run(
            [*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def create_database(self) -> str:
        import psycopg

        self._count += 1
        name = f"winnow_test_{self._count}"
        with psycopg.connect(
            f"postgresql://winnow@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://winnow@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(
            [*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


class WorkerProcess:
    """`celery worker` in a child process, configured only through WINNOW_* variables."""

    def __init__(
        self, env: Mapping[str, str], log_path: Path, queues: str = "cpu,browser,gpu"
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            worker_argv(queues, concurrency=1, pool="prefork", loglevel="INFO"),
            cwd=REPO,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill_hard(self) -> None:
        """SIGKILL the whole worker (main process and pool children), as a crash would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


def winnow_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh install: no WINNOW_* settings but the data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINNOW_")}
    return {**env, "WINNOW_DATA_DIR": str(data_dir), **extra}


class ServeProcess:
    """`winnow serve` on a free port, as a user starts it (``args`` added, e.g.
    --no-worker); stopped with SIGTERM."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port), *args],
            cwd=REPO,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout=120, proc=self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin_password(self) -> str:
        found = re.search(r"Created user 'admin' with password: (\S+)", self.log())
        assert found, self.log()
        return found.group(1)

    def group_alive(self, timeout: float) -> bool:
        """Whether any process of serve's group (serve, its worker, the pool) is still there
        after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return False
            if time.monotonic() > deadline:
                return True
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        # Whatever is left of the group must not outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


class S3Server:
    """An S3-compatible endpoint on 127.0.0.1 (moto's server, in a thread of this process)
    with one bucket: the store that the machines of a deployment share."""

    bucket = "winnow"

    def __init__(self) -> None:
        import logging

        import boto3
        from moto.server import ThreadedMotoServer

        # One log line per request would drown the test output.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.client = boto3.client("s3", **self.credentials_kwargs())
        self.client.create_bucket(Bucket=self.bucket)

    def credentials_kwargs(self) -> dict[str, str]:
        return {
            "endpoint_url": self.endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "winnow-test",
            "aws_secret_access_key": "winnow-test-secret",
        }

    def env(self, prefix: str) -> dict[str, str]:
        """WINNOW_* settings of a machine that uses this bucket under ``prefix``."""
        return {
            "WINNOW_STORE_URL": f"s3://{self.bucket}/{prefix}",
            "WINNOW_STORE_ENDPOINT_URL": self.endpoint,
            "WINNOW_STORE_REGION": "us-east-1",
            "WINNOW_STORE_ACCESS_KEY_ID": "winnow-test",
            "WINNOW_STORE_SECRET_ACCESS_KEY": "winnow-test-secret",
        }

    def settings(self, data_dir: Path, prefix: str) -> Settings:
        """Settings of a machine with ``data_dir`` whose store is this bucket's ``prefix``."""
        env = self.env(prefix)
        return Settings(
            data_dir=data_dir,
            store_url=env["WINNOW_STORE_URL"],
            store_endpoint_url=self.endpoint,
            store_region="us-east-1",
            store_access_key_id=env["WINNOW_STORE_ACCESS_KEY_ID"],
            store_secret_access_key=env["WINNOW_STORE_SECRET_ACCESS_KEY"],
        )

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def stop(self) -> None:
        self.server.stop()
