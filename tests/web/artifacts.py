"""Where the browser tests leave their screenshots: test-artifacts/web/ at the repository
root (ignored by git), one PNG per page, for a person to look at after a run."""

from __future__ import annotations

from typing import Any

from tests.services import REPO

ARTIFACTS = REPO / "test-artifacts" / "web"


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
