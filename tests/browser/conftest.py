"""Playwright (Python) driving Debian's Chromium; never a downloaded browser.

Screenshots go to tests/artifacts/ (git-ignored), one per page a test calls `shot()` on."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
# The machine has no network: without these Chromium tries (and fails) to reach Google.
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-quic", "--disable-default-apps", "--disable-extensions"]


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, request):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15000)
    ARTIFACTS.mkdir(exist_ok=True)
    counter = {"n": 0}

    def shot(label: str) -> Path:
        counter["n"] += 1
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{request.node.name}-{counter['n']:02d}-{label}")
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    page.shot = shot
    yield page
    context.close()
