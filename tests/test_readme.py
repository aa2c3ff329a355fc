"""The README's REST walkthrough, run verbatim against `winnow serve` on the embedded default."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import REPO, ServeProcess, winnow_env

# Real training runs, served processes: seconds each.
pytestmark = pytest.mark.slow


def walkthrough() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Walkthrough over REST") :]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the walkthrough has no sh block"
    return match.group(1)


def test_readme_first_block_holds_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    first = re.search(r"```\w*\n(.*?)```", text, re.S)
    assert first
    lines = [line for line in first.group(1).splitlines() if line.strip()]
    assert lines == ["scripts/run serve", "scripts/run test"]
    assert "scripts/run test" in (REPO / ".ci" / "run").read_text()


@pytest.mark.timeout(900)
def test_walkthrough_works_verbatim(tmp_path: Path) -> None:
    script = walkthrough()
    env = winnow_env(tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    # The walkthrough runs at the repository root, where .venv is.
    (work / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    serve = ServeProcess(env, tmp_path / "serve.log")
    try:
        # The only edits: where the service listens here, and the password it printed.
        assert "W=http://127.0.0.1:8000\n" in script
        script = script.replace("W=http://127.0.0.1:8000\n", f"W={serve.url}\n")
        script = re.sub(
            r"PASSWORD='[^']*'", f"PASSWORD='{serve.admin_password()}'", script, count=1
        )
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=800,
        )
    finally:
        serve.stop()
    assert done.returncode == 0, (done.stdout, done.stderr, serve.log()[-4000:])
    out = done.stdout
    assert "'added': 600" in out
    assert "undo" in out
    assert (work / "cleaned.csv").read_text().startswith("name,label\n")
    assert "'probabilities'" in out or "'classes'" in out or "seven" in out
