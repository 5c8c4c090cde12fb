"""A metric's trend page in a real browser (Playwright driving Debian's chromium) against a real
`labgate serve`, after real flights whose step measured a planted slowdown: from the job page to
the trend, a dot per flight, the change point's marker, and the marker's link to its flight.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.test_web_browser import WAIT_S, browser, read_line  # noqa: F401
from labs import labgate
from test_perf_cli import measured_lab

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[list[int], str]]:
    """Fourteen real flights of main, the step's cost 30% higher from the eighth on, served by
    `labgate serve`: (flight ids, base URL)."""
    lab_dir, cost = measured_lab(tmp_path, f"sqlite:///{tmp_path / 'lab.db'}")
    ids = []
    # `labgate flight run` in its own process: the browser's event loop runs in this thread
    for value in [100] * 7 + [130] * 7:
        cost.write_text(f"{value}\n")
        run = subprocess.run(
            labgate(lab_dir, "flight", "run", "main", "--blessing", "real", "--json", "-"),
            capture_output=True, text=True,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        ids.append(json.loads(run.stdout)["id"])
    server = subprocess.Popen(
        labgate(lab_dir, "serve", "--listen", "127.0.0.1:0"),
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        line = read_line(server, WAIT_S)
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line
        yield ids, match.group(0)
    finally:
        server.terminate()
        server.wait(WAIT_S)


def test_the_trend_shows_each_flight_and_the_change_point_linked_to_its_flight(
    browser: Any,  # noqa: F811
    served: tuple[list[int], str],
    artifact_dir: Path,
) -> None:
    ids, base = served
    expect = sync_api.expect
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(f"{base}/flights/{ids[0]}/jobs/perf")
    page.click("a:text-is('bench time')")
    expect(page.locator("h1")).to_contain_text("time of perf bench on main")
    expect(page.locator("svg.trend a.point circle")).to_have_count(len(ids))
    marker = page.locator("svg.trend a.change-point")
    expect(marker).to_have_count(1)
    expect(marker).to_have_attribute("href", f"/flights/{ids[7]}")
    expect(marker.locator("text")).to_have_text("+29.4%")
    assert marker.locator("line").bounding_box()["height"] > 100  # drawn across the plot
    page.screenshot(path=artifact_dir / "1-trend.png", full_page=True)

    page.locator(f"svg.trend a.point[data-flight='{ids[3]}'] circle").click()
    expect(page.locator("h1")).to_contain_text(f"Flight {ids[3]}")
    page.go_back()
    marker.locator("text").click()
    expect(page.locator("h1")).to_contain_text(f"Flight {ids[7]}")
    assert page.url == f"{base}/flights/{ids[7]}"
    page.screenshot(path=artifact_dir / "2-flight.png", full_page=True)
    page.close()
