"""One local fleet (2 nodes) and one headless Debian chromium shared by every browser test of the dashboard.

The fleet serves ``ranker`` (v1, v2: v2 serves) and ``scorer`` (v1 serves; v2 is published by the fixture
with a warm-up record made of markup, so TF Serving's load error quotes that markup). Chromium is the
machine's (``/usr/bin/chromium``, installed by scripts/bootstrap.sh); Playwright only drives it.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import google_crc32c
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from services.local_fleet.convergence import wait_available
from services.local_fleet.fleet import FleetOptions, LocalFleet
from services.local_fleet.savedmodels import write_model

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
#: What the failing version's warm-up record holds: TF Serving quotes it in its load error.
MARKUP = '<img src=x onerror="document.body.dataset.pwned=1"><b id="injected">bold</b>'


def run_async(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to its end from a sync test: in a thread of its own, as Playwright's sync API keeps
    an event loop set on the test's thread."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def tfrecord(*records: bytes) -> bytes:
    """The TFRecord framing (length, masked crc32c of the length, data, masked crc32c of the data)."""

    def masked(data: bytes) -> bytes:
        crc = google_crc32c.value(data)
        return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)

    out = b""
    for record in records:
        length = struct.pack("<Q", len(record))
        out += length + masked(length) + record + masked(record)
    return out


def write_markup_warmup_model(models_dir: Path, source: Path) -> Path:
    """A copy of a good version whose only warm-up record is ``MARKUP`` (no PredictionLog: the load fails)."""
    target = models_dir / "markup"
    shutil.copytree(source, target)
    warmup = target / "assets.extra" / "tf_serving_warmup_requests"
    warmup.parent.mkdir(parents=True, exist_ok=True)
    warmup.write_bytes(tfrecord(MARKUP.encode()))
    return target


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    root = tmp_path_factory.mktemp("dashboard-fleet")
    models = tmp_path_factory.mktemp("dashboard-models")
    options = FleetOptions(nodes=2, sync_interval=1.0, quiet_period=0.5, master_poll_interval=1.0)
    fleet = LocalFleet(root / "run", options)
    try:
        # The fleet's processes start while this process builds the SavedModels (TensorFlow's import).
        with ThreadPoolExecutor(max_workers=1) as pool:
            started = pool.submit(fleet.start)
            v1, v2 = write_model(models, 1), write_model(models, 2)
            started.result()
        fleet.publish("ranker", v1)
        fleet.publish("ranker", v2)
        fleet.publish("scorer", v1)
        run_async(wait_available(fleet.nodes, "ranker", [2], timeout=120))
        run_async(wait_available(fleet.nodes, "scorer", [1], timeout=60))
        # Published now, it fails while the first tests run (the failure test waits for it, bounded).
        fleet.publish("scorer", write_markup_warmup_model(models, v2), version=2)
    except Exception:
        fleet.stop()
        raise
    yield fleet
    fleet.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: scripts/bootstrap.sh installs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Screens:
    """Numbered screenshots of one test's steps, under its tmp_path."""

    def __init__(self, page: Page, directory: Path) -> None:
        self.page, self.directory, self.count = page, directory, 0

    def shot(self, step: str) -> Path:
        self.count += 1
        path = self.directory / f"{self.count:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def open_page(browser: Browser, tmp_path: Path) -> Iterator[Any]:
    """``open_page(viewport)`` → (page, screens, console errors); every context is closed after the test."""
    contexts = []

    def open_(viewport: dict[str, int] = DESKTOP) -> tuple[Page, Screens, list[str]]:
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                errors.append(message.text)

        page.on("console", on_console)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page, Screens(page, tmp_path), errors

    yield open_
    for context in contexts:
        context.close()
