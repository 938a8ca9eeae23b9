"""Fixtures for the web console's browser tests (tests/console/browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.console.browser import headless_browser


@pytest.fixture
def download_dir(tmp_path: Path) -> Path:
    """Where the browser saves what it downloads."""
    return tmp_path / "downloads"


@pytest.fixture
def browser(download_dir: Path) -> Iterator[WebDriver]:
    """Headless chromium, fresh for each test; fails the test when chromium is not installed."""
    with headless_browser(download_dir) as driver:
        yield driver
