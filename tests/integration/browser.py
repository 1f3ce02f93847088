"""Headless Chromium for the web UI tests: Debian's chromium + chromium-driver driven by Selenium,
nothing downloaded. With CI=true a missing browser or driver fails the test instead of skipping."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labkit import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: where the suite keeps its screenshots (docs/web-ui.md shows them)
SCREENSHOTS = Path(os.environ.get("DUTLAB_SCREENSHOTS", REPO / "docs" / "screenshots"))


def require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium Python package")
    if missing:
        why = f"{', '.join(missing)} missing (apt-get install chromium chromium-driver; pip install selenium)"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)


def chromium(tmp: Path, width: int = 1280, height: int = 1000) -> Any:
    """A new headless Chromium with a profile of its own in `tmp` (one per user: its own cookies)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox",  # the tests run as root
                "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    tmp.mkdir(parents=True, exist_ok=True)
    service = Service(str(CHROMEDRIVER), log_output=str(tmp / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    return driver


def quit_browser(driver: Any, tmp: Path) -> None:
    """Quit Chromium (chromedriver stops the browser it started, by its PID) and drop its profile."""
    try:
        driver.quit()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.25,
             driver: Any = None) -> Any:
    """`check()`'s first true value; an AssertionError naming `what` (and the page `driver` shows)
    when none came in `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # the page was replaced mid-read (a reload): ask again
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    page = f"\n{driver.current_url}:\n{driver.find_element('tag name', 'body').text[:2000]}" if driver else ""
    raise AssertionError(f"{what}: not seen in {timeout:.0f}s (last: {last!r}){page}")


def screenshot(driver: Any, name: str) -> Path:
    """Save the page as docs/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"Chromium could not save {path}"
    return path
