"""Settings, read once from WINNOW_* environment variables.

With nothing set Winnow runs on the embedded default: a SQLite database and a
SQLite-backed Celery broker, both under the data directory.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WINNOW_", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"), description="Images, models, uploads, SQLite files."
    )
    database_url: str = Field(
        default="", description="SQLAlchemy URL; SQLite in data_dir if empty."
    )
    broker_url: str = Field(default="", description="Celery broker; SQLite transport if empty.")
    secret_key: str = Field(default="", description="Signs session cookies; generated if empty.")
    admin_password: str = Field(default="", description="Password of the first admin user.")
    host: str = "127.0.0.1"
    port: int = 8000
    worker_concurrency: int = 1
    job_stale_after: float = Field(
        default=120.0, description="Seconds without a heartbeat before a running job is requeued."
    )
    job_resend_after: float = Field(
        default=3600.0,
        description="Seconds a sent job may wait queued before its message is sent again "
        "(a broker that lost it); a job the broker refused is sent again at once.",
    )
    interactive_threads: int = Field(
        default=2,
        ge=1,
        description="Threads per API process for the routes a person waits on while cleaning "
        "(a decision, a page of the review listing); the others use the usual 40.",
    )
    review_lease_seconds: float = Field(
        default=300.0,
        description="Seconds of inactivity after which a reviewer's batch of the shared "
        "review queue goes back to the others.",
    )
    job_queue_max: float = Field(
        default=7 * 86400.0,
        description="Seconds a job may wait queued (no worker took it) before it fails.",
    )
    time_limits: dict[str, int] = Field(
        default_factory=dict,
        description='Seconds per job kind, over core/kinds.py\'s limits: {"train": 86400}.',
    )

    chromium: str = Field(default="", description="Chromium executable; Playwright's own if empty.")
    browser_endpoint: str = Field(
        default="",
        description="ws:// address of a Playwright server (`playwright run-server`) that starts "
        "Chromium apart from the worker; Chromium runs in the worker's process tree if empty.",
    )
    bing_url: str = "https://www.bing.com"
    duckduckgo_url: str = "https://duckduckgo.com"
    safe_search: bool = True

    download_concurrency: int = 64
    download_per_host: int = 8
    download_max_bytes: int = 20 * 1024 * 1024
    download_timeout: float = 30.0
    fetch_allow: str = Field(
        default="", description="Comma-separated hosts or networks exempt from the SSRF guard."
    )

    zip_max_members: int = Field(default=100_000, description="Files in one imported zip.")
    zip_max_total_bytes: int = Field(
        default=16 * 1024**3, description="What one imported zip may expand to, in bytes."
    )
    max_body_bytes: int = Field(
        default=16 * 1024**2, description="Request body of JSON and form routes."
    )
    max_upload_bytes: int = Field(
        default=1024**3, description="Request body of image, URL list, weights, predict uploads."
    )
    max_zip_upload_bytes: int = Field(
        default=4 * 1024**3, description="Request body of a zip import."
    )
    max_anonymous_bytes: int = Field(
        default=64 * 1024, description="Request body without valid credentials (a login)."
    )

    login_limit_per_user: str = Field(
        default="10/5minutes", description="Failed logins per user name (limits notation)."
    )
    login_limit_per_address: str = Field(
        default="30/5minutes", description="Failed logins per client address."
    )
    limits_storage: str = Field(
        default="",
        description="limits storage URI for login throttling; memory:// unless the broker is "
        "Redis, whose server is then shared by every API process.",
    )

    metrics_token: str = Field(
        default="",
        description="Bearer token Prometheus must send to read /metrics; open if empty.",
    )

    max_pixels: int = 64_000_000
    min_image_side: int = 32
    normal_max_side: int = 512
    thumb_max_side: int = 160

    weights_dir: Path | None = Field(
        default=None, description="Torch hub cache for pretrained weights (TORCH_HOME)."
    )

    store_url: str = Field(
        default="",
        description="Where images, models and uploads live: empty for the data directory, "
        "or s3://bucket/prefix for an S3-compatible bucket that every machine shares.",
    )
    store_endpoint_url: str = Field(
        default="", description="S3 endpoint (MinIO, Ceph...); AWS's own if empty."
    )
    store_region: str = Field(default="", description="S3 region; boto3's default if empty.")
    store_access_key_id: str = Field(
        default="", description="S3 key id; boto3's usual chain (AWS_*, instance role) if empty."
    )
    store_secret_access_key: str = Field(default="", description="S3 secret key.")
    store_cache_dir: Path | None = Field(
        default=None,
        description="Local copies of store files this machine read (training images, models); "
        "data_dir/cache if empty. Safe to delete at any time.",
    )

    log_format: Literal["text", "json"] = Field(
        default="text", description="text for people, json for log collectors (one object a line)."
    )

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'winnow.sqlite').resolve()}"

    @property
    def celery_broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"

    @property
    def throttle_storage(self) -> str:
        if self.limits_storage:
            return self.limits_storage
        return self.broker_url if self.broker_url.startswith("redis") else "memory://"

    @property
    def session_secret(self) -> str:
        if self.secret_key:
            return self.secret_key
        # A generated key is kept in the data directory so that sessions survive restarts.
        path = self.data_dir / "secret.key"
        if not path.exists():
            _publish_secret(path)
        return path.read_text().strip()


def _publish_secret(path: Path) -> None:
    """Write a new key where none is, whoever else tries at the same moment.

    API processes started together (`serve --workers N`) each asked for the key; writing
    it in place, two could each keep a key of their own (a session signed by one was
    refused by the other) or read a file not yet written, and the file was readable by
    everyone until its chmod. The key is written, readable by the owner only, under a
    name of this process's own, then linked into place: the link fails if a key is there,
    and every process reads the one key that got there first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48))
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()


@lru_cache
def get_settings() -> Settings:
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings
