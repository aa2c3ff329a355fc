"""Fixtures of the harvest tests: a Chromium to drive and the local fake search engine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings
from tests.workers.harvest.fake_engine import FakeEngine


def find_chromium() -> str | None:
    """WINNOW_CHROMIUM, else a system Chromium, else Playwright's own build when installed."""
    configured = os.environ.get("WINNOW_CHROMIUM")
    if configured:
        return configured
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        own = playwright.chromium.executable_path
    return own if Path(own).exists() else None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        message = (
            "no Chromium: set WINNOW_CHROMIUM, install Debian's chromium or run "
            "`playwright install chromium`"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def fake_engine() -> Iterator[FakeEngine]:
    with FakeEngine() as engine:
        yield engine


@pytest.fixture
def browser_settings(settings: Settings, chromium: str, fake_engine: FakeEngine) -> Settings:
    """The test settings pointed at the fake engine; job contexts share this object."""
    settings.chromium = chromium
    settings.bing_url = fake_engine.url
    settings.duckduckgo_url = fake_engine.url
    return settings
