"""The generated report opens in a real browser (Debian's headless chromium) without console
errors, its figures decode, the banner is on screen, and a screenshot of it is a real picture.

Chromium is driven over the DevTools protocol (a websocket, with the `websocket-client` package
jupyter brings): console messages, uncaught exceptions and failed loads are collected while the
page loads, then the page is measured and a full-page screenshot taken. The test is skipped only
when chromium is not installed (CI installs it).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_report import built_report  # noqa: E402

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if Path("/usr/bin/chromium").exists() else None)
pytestmark = [
    pytest.mark.notebooks,
    pytest.mark.skipif(CHROMIUM is None,
                       reason="Debian's chromium is not installed (apt-get install -y chromium)"),
]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-allow-origins=*"]
WIDTH = 1400


class DevTools:
    """A minimal DevTools-protocol client: send commands, keep every event that arrives."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {timeout} s")
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))

    def drain(self, seconds: float) -> None:
        import websocket

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                break

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """A headless chromium with a DevTools port; yields the page target's websocket URL."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                             "--remote-debugging-port=0", f"--window-size={WIDTH},900",
                             "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start: "
                                   + proc.stderr.read().decode(errors="replace")[-2000:])
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            targets = json.loads(resp.read())
        page = next(t for t in targets if t.get("type") == "page")
        yield page["webSocketDebuggerUrl"]
    finally:
        if proc.poll() is None:  # the browser we started, and its helper processes
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def problems(events: list[dict]) -> list[str]:
    """Console errors and warnings, uncaught exceptions and failed loads, as text."""
    out = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert",
                                                                           "warning"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in
                            params.get("args", []))
            out.append(f"console.{params['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            out.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            out.append(f"log error: {entry.get('text')} {entry.get('url', '')}")
        elif method == "Network.loadingFailed":
            out.append(f"load failed: {params.get('errorText')}")
    return out


def test_report_opens_in_chromium_without_console_errors(chromium, tmp_path_factory):
    html = built_report(tmp_path_factory.getbasetemp() / "ckd_report_study")
    shot_path = tmp_path_factory.mktemp("screenshots") / "report.png"
    tools = DevTools(chromium)
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=html.resolve().as_uri())
        tools.wait_for("Page.loadEventFired", timeout=60)
        tools.drain(1.0)
        found = problems(tools.events)
        assert not found, "the report logs errors in the browser:\n" + "\n".join(found)

        # the page is the report: banner on top, tables, decoded figures
        banner = tools.evaluate("document.getElementById('ckd-banner').innerText")
        assert "NOT the paper's CIFAR-100 numbers" in banner
        banner_top = tools.evaluate(
            "document.getElementById('ckd-banner').getBoundingClientRect().top")
        assert banner_top < 400  # the first thing a reader sees
        assert tools.evaluate("document.querySelectorAll('table.ckd').length") >= 4
        images = tools.evaluate("Array.from(document.images).map(i => [i.complete, "
                                "i.naturalWidth, i.naturalHeight])")
        assert len(images) >= 3
        assert all(done and w > 100 and h > 100 for done, w, h in images), images

        # a full-page screenshot
        height = int(tools.evaluate("document.documentElement.scrollHeight"))
        height = max(900, min(height, 12000))
        tools.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=height,
                   deviceScaleFactor=1, mobile=False)
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        shot_path.write_bytes(base64.b64decode(shot["data"]))
        tools.drain(0.3)
        found = problems(tools.events)
        assert not found, "the report logs errors in the browser:\n" + "\n".join(found)
    finally:
        tools.close()
    print(f"screenshot: {shot_path}")

    from PIL import Image

    data = shot_path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.width == WIDTH and image.height >= 900
    pixels = np.asarray(image, dtype=np.int16)
    assert pixels.std() > 10  # not a blank page
    assert (pixels.min(axis=2) < 200).mean() > 0.01  # some ink on it
    # the banner's red border is on screen near the top
    top = pixels[:500]
    red = (top[..., 0] > 150) & (top[..., 1] < 40) & (top[..., 2] < 60)
    assert red.sum() > 1000
