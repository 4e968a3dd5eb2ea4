"""The dashboard's browser tests share one browser per module: Debian's chromium, driven by
playwright."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from dashboard_harness import CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium, one per test module (nothing is downloaded: the system's browser)."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (.ci/browser installs it)")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
