"""The generated session key: one per data directory, whoever asks first."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import Any

from core.config import Settings

PROCESSES = 8


def _secret(data_dir: str, start: Any, keys: Any) -> None:
    start.wait(timeout=60)
    keys.put(Settings(data_dir=Path(data_dir), secret_key="").session_secret)


def test_processes_started_together_share_one_generated_key(tmp_path: Path) -> None:
    """`serve --workers N` starts its API processes together, and each asks for the key:
    written in place, two could keep keys of their own (a session signed by one refused by
    the other) or read an empty file."""
    context = multiprocessing.get_context("spawn")
    for attempt in range(3):
        data_dir = tmp_path / f"data{attempt}"
        start, keys = context.Barrier(PROCESSES), context.Queue()
        processes = [
            context.Process(target=_secret, args=(str(data_dir), start, keys))
            for _ in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        got = [keys.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        assert len(set(got)) == 1 and len(got[0]) >= 32, got
        key_file = data_dir / "secret.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert [p.name for p in data_dir.iterdir()] == ["secret.key"]  # no drafts left
