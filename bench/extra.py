"""The optional `bench` extra (fastai, the anchor of the benches), installed when missing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ensure_bench_extra() -> None:
    if importlib.util.find_spec("fastai") is None:
        print("installing the bench extra (fastai) ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[bench]"], check=True
        )
