"""Fixtures for the browser tests: Debian's Chromium driven headless by Playwright (its own browser
downloads are never used), one browser per test module, a fresh context per test, and a helper that
screenshots a page at desktop and phone sizes into $SCREENSHOT_DIR (default: a pytest temporary folder)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync",
    # Playback stays real (the clock runs, `ended` comes from the media pipeline); there is just no
    # gesture requirement to satisfy and no sound card to open.
    "--autoplay-policy=no-user-gesture-required", "--mute-audio",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def chromium(django_db_setup):
    """A headless Chromium for the module. Depends on django_db_setup so the test database outlives it."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing; install Debian's chromium package to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API keeps an asyncio loop registered as running on this thread while the test
    # code runs, which Django takes for an async context and refuses ORM calls in. The test code is
    # plain synchronous code, so lift the check while the browser is up, and only then.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_api.sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def browser_page(chromium):
    """A page in a fresh context (its own cookies, so its own participant session) at desktop size.
    A JavaScript error or a Content-Security-Policy violation on any page fails the test at teardown."""
    context = chromium.new_context(viewport=DESKTOP, locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # a script, style or request the Content-Security-Policy blocked is reported on the console only
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text else None)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the participant pages: {errors}"


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    configured = os.environ.get("SCREENSHOT_DIR")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Screenshots:
    """Numbered full-page screenshots at desktop and phone widths; the page is left at desktop size."""

    def __init__(self, folder: Path, prefix: str):
        self.folder = folder
        self.prefix = prefix
        self.count = 0
        self.taken: list[Path] = []

    def take(self, page, name: str) -> None:
        self.count += 1
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(size)
            path = self.folder / f"{self.prefix}-{self.count:02d}-{slug}-{label}.png"
            page.screenshot(path=str(path), full_page=True)
            self.taken.append(path)
        page.set_viewport_size(DESKTOP)


@pytest.fixture
def screenshots(screenshot_dir):
    """screenshots("walkthrough") gives a Screenshots whose files start with that prefix."""
    return lambda prefix: Screenshots(screenshot_dir, prefix)
