"""The check report in a real browser: headless Chromium opens report.html, every image loads,
the verdict table is there, nothing is logged to the console as an error, and a screenshot is taken.

Chromium is driven through the Chrome DevTools protocol over a websocket (``websocket-client``):
no WebDriver binary, no network. The browser is Debian's ``chromium`` package (``.ci/run``
installs it); without it the test skips.

``experiments/images/check_report.png`` is ``save_screenshot`` of a real check: ``fr-shield check``
with the three real models on two LFW photos, one protected with ``fr-shield protect --preset mid``
and one left as it was::

    cd tests && python -c "from pathlib import Path; from test_report_browser import save_screenshot; \
        save_screenshot(Path('REPORT_DIR/report.html'), Path('../experiments/images/check_report.png'))"
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FACE_PHOTO = "George_W_Bush/George_W_Bush_0001.jpg"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("one_thread")]


def chromium_binary() -> str | None:
    configured = os.environ.get("FR_SHIELD_CHROMIUM")
    if configured:
        return configured
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


class Browser:
    """One headless Chromium with one page, spoken to over the DevTools protocol."""

    def __init__(self, binary: str, profile: Path, width: int = 1280, height: int = 900, timeout: float = 60):
        import websocket

        self.timeout = timeout
        self.events: list[dict] = []
        self._next_id = 0
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", "--mute-audio",
             f"--window-size={width},{height}", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        try:
            port = self._wait_for_port(profile / "DevToolsActivePort")
            pages = self._wait_for_page(port)
            self.socket = websocket.create_connection(pages["webSocketDebuggerUrl"], timeout=timeout,
                                                      suppress_origin=True)
        except BaseException:
            self.close()
            raise
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def _wait_for_port(self, marker: Path) -> int:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}: "
                                   f"{self.process.stderr.read().decode(errors='replace')[-2000:]}")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def _wait_for_page(self, port: int) -> dict:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                pages = [t for t in json.load(answer) if t.get("type") == "page"]
            if pages:
                return pages[0]
            time.sleep(0.1)
        raise TimeoutError("chromium opened no page")

    def call(self, method: str, **params) -> dict:
        self._next_id += 1
        self.socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for_event(self, method: str) -> dict:
        for index, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(index)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            if message.get("method") == method:
                return message
            self.events.append(message)
        raise TimeoutError(f"no {method} event")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                errors.append(f"{params['entry'].get('source')}: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        return errors

    def screenshot(self, target: Path, width: int = 1280) -> Path:
        """The whole page (not only the window) as a PNG."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(shot["data"]))
        return target

    def close(self) -> None:
        socket = getattr(self, "socket", None)
        if socket is not None:
            socket.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


IMAGES_JS = "JSON.stringify([...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})))"
VERDICT_TABLE_JS = """JSON.stringify((() => {
  const table = [...document.querySelectorAll('table')].find(t => [...t.querySelectorAll('th')].some(h => h.textContent.trim() === 'verdict'));
  if (!table) return null;
  return [...table.querySelectorAll('tr')].slice(1).map(r => [...r.querySelectorAll('td')].map(c => c.textContent.trim()));
})())"""


def inspect_report(report_html: Path, screenshot: Path, binary: str) -> dict:
    """Open the report; its images, verdict rows and console errors; write the screenshot."""
    with tempfile.TemporaryDirectory(prefix="fr-shield-chromium-") as profile:
        browser = Browser(binary, Path(profile))
        try:
            browser.open(report_html.resolve().as_uri())
            browser.evaluate("Promise.all([...document.images].map(i => i.decode().catch(() => null)))")
            result = {
                "images": json.loads(browser.evaluate(IMAGES_JS)),
                "verdicts": json.loads(browser.evaluate(VERDICT_TABLE_JS)),
                "title": browser.evaluate("document.title"),
            }
            browser.screenshot(screenshot)
            result["console_errors"] = browser.console_errors()
            return result
        finally:
            browser.close()


def save_screenshot(report_html: Path, target: Path) -> dict:
    """Open a report in Chromium and save its full-page screenshot (the module docstring's one-off)."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("no chromium on PATH")
    return inspect_report(report_html, target, binary)


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does this)")
    return binary


def make_check_folders(root: Path, face: Image.Image) -> tuple[Path, Path]:
    """original/ and protected/: an unchanged copy, a noisy copy, and a photo with no face."""
    original, protected = root / "original", root / "protected"
    original.mkdir(parents=True)
    protected.mkdir(parents=True)
    face.save(original / "same.jpg", quality=95)
    shutil.copyfile(original / "same.jpg", protected / "same.jpg")
    face.save(original / "noisy.png")
    noisy = np.asarray(face, np.float32) + np.random.default_rng(0).normal(0, 25, np.asarray(face).shape)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(protected / "noisy.png")
    flat = Image.new("RGB", (200, 150), (90, 140, 200))
    flat.save(original / "flat.jpg")
    flat.save(protected / "flat.jpg")
    return original, protected


@pytest.mark.real
def test_check_report_renders_in_chromium(chromium, lfw_root, weight_cache, tmp_path):
    from tiny_models import TinyFR

    from fr_shield.app.check import CHECK_TRANSFORMS, Checker, run_check
    from fr_shield.core.detect import FaceDetector

    original, protected = make_check_folders(tmp_path, Image.open(lfw_root / FACE_PHOTO).convert("RGB"))
    checker = Checker([TinyFR(0), TinyFR(1, size=40, name="tiny40")], FaceDetector(),
                      [*CHECK_TRANSFORMS[:3], CHECK_TRANSFORMS[-1]])  # none, JPEG, resize, the largest box blur
    report, _ = run_check(original, protected, tmp_path / "report", checker, progress=False, log=lambda s: None)
    page = tmp_path / "report" / "report.html"

    seen = inspect_report(page, tmp_path / "check_report.png", chromium)

    assert seen["title"] == "fr_shield check"
    faces = sum(len(p["faces"]) for p in report["photos"])
    photos_with_faces = sum(bool(p["faces"]) for p in report["photos"])
    assert len(seen["images"]) == 3 * faces + photos_with_faces  # before/after/difference per face, a plot per photo
    broken = [image for image in seen["images"] if not image["complete"] or image["width"] <= 0]
    assert not broken, broken
    assert seen["verdicts"] is not None, "no table with a 'verdict' column"
    assert sorted(row[0] for row in seen["verdicts"]) == sorted(p["file"] for p in report["photos"])
    by_file = {row[0]: row[2] for row in seen["verdicts"]}
    assert by_file["same.jpg"] == "matched" and by_file["flat.jpg"] == "no face"
    assert seen["console_errors"] == []
    with Image.open(tmp_path / "check_report.png") as shot:
        shot.verify()
    with Image.open(tmp_path / "check_report.png") as shot:
        assert shot.width == 1280 and shot.height > 900  # the whole page, longer than one window
        assert len(set(shot.convert("L").resize((64, 64)).getdata())) > 20  # not a blank page
