"""The HTML report in a real browser (Debian's headless Chromium over the DevTools protocol):
no console error, every figure drawn, the tables sort, a full-page screenshot.

Skipped only when chromium is missing and CI is not set; under CI=true a missing browser
fails (.ci/run installs it), as tests/test_slurm.py does for SLURM.
"""

from __future__ import annotations

import os

import pytest
import report_browser
import report_fixture
from test_report_outputs import EXPECTED_FIGURES


@pytest.fixture(scope="module")
def browser_ok():
    if report_browser.chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium missing under CI (apt-get install chromium; see .ci/run)")
        pytest.skip("chromium not installed (apt-get install chromium)")


def test_full_report_renders_without_errors(browser_ok, tmp_path):
    paths = report_fixture.render(tmp_path)
    shot = tmp_path / "report.png"
    found = report_browser.inspect(paths["html"], shot)
    assert report_browser.problems(found) == []
    assert {f["id"].removeprefix("fig-") for f in found["figures"]} == EXPECTED_FIGURES
    assert found["sections"][0] == "Retrieval" and found["sections"][-1] == "Provenance"
    assert found["contents"] == len(found["sections"])
    up, down = found["sorted"]
    assert up == sorted(up) and down == sorted(up, reverse=True) and len(up) > 1
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_the_check_sees_a_console_error_and_a_missing_figure(browser_ok, tmp_path):
    paths = report_fixture.render(tmp_path, classification=[], finetunes=[])
    page = paths["html"].read_text()
    start = page.index('<figure class="fig"')
    svg_start = page.index("<svg", start)
    svg_end = page.index("</svg>", svg_start) + len("</svg>")
    broken = page[:svg_start] + page[svg_end:]  # one figure without its drawing
    broken = broken.replace("</body>", "<script>console.error('boom')</script></body>")
    bad = tmp_path / "broken.html"
    bad.write_text(broken)
    problems = report_browser.problems(report_browser.inspect(bad))
    assert any("boom" in p for p in problems), problems
    assert any("does not render" in p for p in problems), problems
