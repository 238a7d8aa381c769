"""The generated report opens in a real browser (Debian's headless chromium) without console
errors, its figures decode, the banner is on screen, and a screenshot of it is a real picture;
no table cell's content runs out of its cell at a laptop's widths (1400 and 1000 px), in the
tiny study's report, in a page of tables filled with long unbroken text, and in every report
this checkout has built (``results/*/report.html``, e.g. the demo's after ``make reproduce``).

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
from test_report import PROFILE, built_report, ensure_study  # noqa: E402

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if Path("/usr/bin/chromium").exists() else None)
pytestmark = [
    pytest.mark.notebooks,
    pytest.mark.xdist_group("report_study"),  # the report study of test_report.py (conftest)
    pytest.mark.skipif(CHROMIUM is None,
                       reason="Debian's chromium is not installed (apt-get install -y chromium)"),
]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-allow-origins=*"]
WIDTH = 1400
WIDTHS = (1400, 1000)  # a laptop's browser window, and a narrow one


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


# -- no table cell overflows ---------------------------------------------------------------------
# Every cell (closed <details> opened first) whose content is wider than the cell, and how wide
# the page is (a table wider than the page must scroll in its own box, not widen the page).
OVERFLOW_JS = """(() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const cells = Array.from(document.querySelectorAll('td, th'));
  return {cells: cells.length, page: document.documentElement.scrollWidth,
          over: cells.filter(c => c.scrollWidth > c.clientWidth).map(c =>
            [c.scrollWidth, c.clientWidth, c.innerText.slice(0, 100)])};
})()"""


def measure(tools: DevTools, page: Path, width: int) -> dict:
    tools.events.clear()  # a load event of the previous page must not count for this one
    tools.call("Emulation.setDeviceMetricsOverride", width=width, height=900,
               deviceScaleFactor=1, mobile=False)
    tools.call("Page.navigate", url=page.resolve().as_uri())
    tools.wait_for("Page.loadEventFired", timeout=60)
    return tools.evaluate(OVERFLOW_JS)


def assert_no_overflow(chromium_url: str, page: Path) -> None:
    tools = DevTools(chromium_url)
    try:
        tools.call("Page.enable")
        for width in WIDTHS:
            found = measure(tools, page, width)
            assert found["cells"] > 0
            assert not found["over"], (f"{page} at {width} px: cells whose content overflows "
                                       "(scrollWidth, clientWidth, text):\n"
                                       + "\n".join(map(str, found["over"])))
            assert found["page"] <= width, f"{page} is {found['page']} px wide at {width} px"
    finally:
        tools.close()


def test_no_table_cell_overflows_in_the_report(chromium, tmp_path_factory):
    assert_no_overflow(chromium, built_report(tmp_path_factory.getbasetemp()
                                              / "ckd_report_study"))


def test_no_table_cell_overflows_with_long_unbroken_text(chromium, tmp_path_factory, tmp_path):
    """The report's tables with the text that broke them before (a long settings string in the
    ablations, once a nowrap line in a 340 px cell), made longer and without spaces, in the
    notebook theme nbconvert wraps the report in."""
    import nbformat

    from ckd_lib.report import build_html, prepare
    from ckd_lib.report import html as fragments

    results = ensure_study(tmp_path_factory.getbasetemp() / "ckd_report_study")
    rep = prepare(PROFILE, results)
    for cell in rep.tables.ablations.rows + rep.tables.teachers.rows:
        cell.settings = "temperature=0.5;cl_weight=100.0;" * 12
        cell.label = "ablation:" + "negatives=student+symmetric+positive_only" * 3
        cell.note = "/very/long/checkpoint/path/" * 10 + "model_last.pth"
    tables = [fragments.pair_table_html(t, rep.sources) for t in rep.tables.main]
    tables += [fragments.ablations_html(rep.tables.ablations, rep.sources),
               fragments.teachers_html(rep.tables.teachers, rep.sources),
               fragments.pair_table_html(rep.tables.budget, rep.sources, budget_column=True),
               fragments.provenance_html(rep.provenance, rep.commands, rep.tables.all()),
               fragments.run_index_html(rep.study)]
    outputs = [nbformat.v4.new_output("display_data", data={"text/html": html})
               for html in [fragments.banner_html(rep.study), *tables]]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("", outputs=outputs)])
    source = tmp_path / "long.ipynb"
    nbformat.write(nb, source)
    assert_no_overflow(chromium, build_html(source, tmp_path / "long.html"))


def _built_reports() -> list[Path]:
    from ckd_lib.study.paths import project_root

    return sorted((project_root() / "results").glob("*/report.html"))


@pytest.mark.skipif(not _built_reports(), reason="no report built in this checkout "
                                                 "(make reproduce builds the demo's)")
@pytest.mark.parametrize("page", _built_reports(), ids=lambda p: p.parent.name)
def test_no_table_cell_overflows_in_the_reports_of_this_checkout(chromium, page):
    assert_no_overflow(chromium, page)
