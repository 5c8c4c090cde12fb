"""The findings pages in a real browser (Playwright driving Debian's chromium) against a real
`labgate serve`, after a real `labgate flight run` whose step ran the real cppcheck: from the
flight to its findings, a finding's file:line to the file at the tested revision, then log in and
triage a finding with the page's form. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.test_web_browser import WAIT_S, browser, read_line  # noqa: F401
from labs import labgate, local_host, toml_str, write_lab
from test_findings import ANALYSE, LEAK, OOB

sync_api = pytest.importorskip("playwright.sync_api")

TOKEN = "browser-token-0123456789"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A lab whose one flight analysed a C tree, served by `labgate serve`: (lab dir, base URL)."""
    lab_dir = write_lab(
        tmp_path / "lab", trees={"xen": {"a.c": LEAK + OOB}}, hosts=local_host("h0"), jobs=ANALYSE
    )
    with lab_dir.toml.open("a") as f:
        f.write(f"\n[web]\ntoken = {toml_str(TOKEN)}\n")
    run = subprocess.run(
        labgate(lab_dir.path, "flight", "run", "main"), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    server = subprocess.Popen(
        labgate(lab_dir.path, "serve", "--listen", "127.0.0.1:0"),
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        line = read_line(server, WAIT_S)
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line
        yield lab_dir.path, match.group(0)
    finally:
        server.terminate()
        server.wait(WAIT_S)


def test_findings_page_links_to_the_source_and_triages(
    browser: Any,  # noqa: F811
    served: tuple[Path, str],
    artifact_dir: Path,
) -> None:
    _, base = served
    expect = sync_api.expect
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    page.goto(base + "/flights/1")
    page.click("a[href='/flights/1/findings']")
    expect(page.locator("h1")).to_contain_text("Findings of flight 1")
    rows = page.locator("table.findings tbody tr")
    expect(rows).to_have_count(2)
    oob = page.locator("tr:has(td:text-is('arrayIndexOutOfBounds'))")
    expect(oob).to_contain_text("new (blocks)")
    expect(oob).to_contain_text("oob")
    page.screenshot(path=artifact_dir / "1-findings.png", full_page=True)

    oob.locator("a:text-is('xen/a.c:15')").click()
    expect(page.locator("h1")).to_contain_text("xen/a.c")
    assert page.url.endswith("/a.c#L15")
    expect(page.locator("tr#L15")).to_contain_text("a[4] = 1;")
    page.screenshot(path=artifact_dir / "2-source.png", full_page=True)

    page.goto(base + "/login")
    page.fill("input[name=token]", TOKEN)
    page.click("button:text-is('log in')")
    page.goto(base + "/flights/1/findings")
    leak = page.locator("tr:has(td:text-is('memleak'))")
    leak.locator("select[name=state]").select_option("intentional")
    leak.locator("input[name=reason]").fill("freed when the process exits")
    leak.locator("input[name=by]").fill("Ann")
    leak.locator("button:text-is('triage')").click()
    expect(page.locator("tr:has(td:text-is('memleak'))")).to_contain_text(
        "intentional by Ann: freed when the process exits"
    )
    expect(page.locator("p.meta")).to_contain_text("2 new (1 blocking)")
    page.screenshot(path=artifact_dir / "3-triaged.png", full_page=True)
    page.close()
