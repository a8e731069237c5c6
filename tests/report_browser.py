"""Open a report in headless Chromium over the DevTools protocol: console errors, figures,
sorting, and a full-page screenshot.

    python tests/report_browser.py results/report/report.html --screenshot report.png

prints what it found and exits 1 on a console error or a figure that does not render.
Chromium is Debian's package (``apt-get install chromium``); the network is never used.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--remote-debugging-port=0",
)

# What the page holds once loaded: every figure's drawn size and every sortable table.
PROBE = """JSON.stringify({
  figures: Array.from(document.querySelectorAll("figure.fig")).map(function (f) {
    var s = f.querySelector("svg"), r = s ? s.getBoundingClientRect() : null;
    return {id: f.id, width: r ? r.width : 0, height: r ? r.height : 0,
            paths: s ? s.querySelectorAll("path").length : 0};
  }),
  broken_images: Array.from(document.images).filter(function (i) {
    return !i.complete || i.naturalWidth === 0; }).length,
  sections: Array.from(document.querySelectorAll("section > h2")).map(function (h) {
    return h.textContent; }),
  contents: document.querySelectorAll("nav a").length,
  sortable: document.querySelectorAll("table.sortable").length
})"""
# Click the first sortable table's first numeric column twice; report the orders seen.
SORT = """(function () {
  var t = document.querySelector("table.sortable");
  if (!t) return "[]";
  var heads = t.tHead.rows[t.tHead.rows.length - 1].cells, col = -1;
  for (var i = 0; i < heads.length && col < 0; i++) {
    if (!isNaN(parseFloat(t.tBodies[0].rows[0].cells[i].textContent))) col = i;
  }
  function values() { return Array.from(t.tBodies[0].rows).map(function (r) {
    return parseFloat(r.cells[col].textContent); }); }
  heads[col].click(); var up = values(); heads[col].click(); var down = values();
  return JSON.stringify([up, down]);
})()"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class Browser:
    """One headless Chromium and one page, driven over its DevTools websocket."""

    def __init__(self, binary: str, width: int = 1280):
        import websocket  # websocket-client

        self.profile = tempfile.mkdtemp(prefix="rsm-eval-chromium-")
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},900"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            if m := re.search(r"DevTools listening on (ws://\S+)", line):
                url = m.group(1)
        if url is None:
            self.close()
            raise RuntimeError("chromium did not print its DevTools address within 60 s")
        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )

    def call(self, method: str, session: bool = False, **params) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        if any(e.get("method") == method for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = json.loads(self.ws.recv())
            self.events.append(event)
            if event.get("method") == method:
                return
        raise TimeoutError(method)

    def open(self, path: Path) -> None:
        self.call("Page.navigate", session=True, url=Path(path).resolve().as_uri())
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        got = self.call("Runtime.evaluate", session=True, expression=expression)
        if "exceptionDetails" in got:
            raise RuntimeError(f"page script failed: {got['exceptionDetails']}")
        return json.loads(got["result"]["value"])

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser-logged errors (a blocked or
        failed load, a Content-Security-Policy violation)."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value")) for a in p["args"]))
            elif e.get("method") == "Runtime.exceptionThrown":
                out.append("exception: " + p["exceptionDetails"].get("text", ""))
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log ({p['entry']['source']}): {p['entry']['text']}")
        return out

    def screenshot(self, dest: Path) -> None:
        size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
        shot = self.call(
            "Page.captureScreenshot",
            session=True,
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        Path(dest).write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def inspect(report: Path, screenshot: Path | None = None) -> dict:
    """Load the report; return its errors, figures, sections, sort check (and screenshot)."""
    binary = chromium()
    if binary is None:
        raise RuntimeError("chromium not found (apt-get install chromium)")
    browser = Browser(binary)
    try:
        browser.open(report)
        found = browser.evaluate(PROBE)
        found["sorted"] = browser.evaluate(SORT)
        if screenshot is not None:
            browser.screenshot(screenshot)
        found["errors"] = browser.errors()
    finally:
        browser.close()
    return found


def problems(found: dict) -> list[str]:
    bad = list(found["errors"])
    bad += [
        f"figure {f['id']} does not render ({f['width']}x{f['height']}, {f['paths']} paths)"
        for f in found["figures"]
        if f["width"] < 100 or f["height"] < 50 or f["paths"] < 5
    ]
    if found["broken_images"]:
        bad.append(f"{found['broken_images']} images did not load")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args(argv)
    found = inspect(args.report, args.screenshot)
    print(json.dumps({k: v for k, v in found.items() if k != "sorted"}, indent=1))
    bad = problems(found)
    for line in bad:
        print("PROBLEM:", line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("LANG", "C.UTF-8")
    sys.exit(main())
