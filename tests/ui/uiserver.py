"""What the tests of ``jobkit ui`` share: the server, as a user starts it, and
a headless system Chromium driven by Selenium (a module, not a conftest:
tests/conftest.py holds that name).

The server is the real command (``python -m jobkit ui --port 0
--no-browser``) in a subprocess whose store is named by ``JOBKIT_STORE``; its
URL is read from its stdout as a user would copy it.  Chromium is Debian's
(``tests/ui/chromium.sh`` installs it); no browser is ever downloaded.  Without
it the tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
URL_LINE = re.compile(r"(http://\S+?)/\?token=(\S+)")


@dataclass
class Server:
    base: str
    token: str
    process: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"{self.base}/?token={self.token}"


@contextlib.contextmanager
def ui_server(store_url: str, *args: str) -> Iterator[Server]:
    """``jobkit ui`` serving ``store_url`` until the block ends."""
    env = {**os.environ, "JOBKIT_STORE": store_url, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "jobkit", "ui", "--port", "0", "--no-browser", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        found = None
        lines = []
        while found is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = URL_LINE.search(line)
        if found is None:
            process.kill()
            _, err = process.communicate(timeout=10)
            raise AssertionError(f"jobkit ui printed no URL: {''.join(lines)!r} {err!r}")
        yield Server(found.group(1), found.group(2), process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def screenshot_dir() -> Path:
    where = os.environ.get("JOBKIT_UI_SCREENSHOTS")
    path = Path(where) if where else Path(tempfile.gettempdir()) / "jobkit-ui-screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_screenshot(driver: Any, name: str) -> Path:
    path = screenshot_dir() / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (the system's) under Selenium, for the module."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        reason = f"no {' and '.join(missing)}: install them with tests/ui/chromium.sh"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the browser tests, not skip them")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
