"""The dashboard in a real browser (Playwright driving Debian's chromium) against a real
`labgate serve` and a real `labgate flight run`: click from the flight list to a job to its log,
watch a running step's log grow and end, open a bisection's graph, log in and retest a job.
Screenshots go to test-artifacts/.

Synchronisation is on events: the server prints its address once it listens; the watched step
blocks reading a FIFO until the test writes to it (opening the FIFO for writing returns once the
step has opened it); the browser waits for text to appear (Playwright's auto-waiting `expect`).
"""

from __future__ import annotations

import os
import re
import selectors
import shlex
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labgate.store import Store
from labgate.store.hosts import HostRegistry
from labs import job, labgate, local_host, step, toml_str, write_lab

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
WAIT_S = 30.0
TOKEN = "browser-token-0123456789"
EVIL = "<script>window.__xss = 1</script>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail("chromium is required under CI", pytrace=False)
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def read_line(proc: subprocess.Popen[str], deadline_s: float) -> str:
    """The next stderr line of ``proc``, failing if it does not come in time."""
    assert proc.stderr is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        if not selector.select(deadline_s):
            raise AssertionError("no output from the process in time")
    return proc.stderr.readline()


def open_fifo_when_read(fifo: Path) -> int:
    """Open the FIFO for writing: returns once the step has opened it for reading."""
    fds: list[int] = []
    opener = threading.Thread(target=lambda: fds.append(os.open(fifo, os.O_WRONLY)), daemon=True)
    opener.start()
    opener.join(WAIT_S)
    assert fds, "the watched step never opened its FIFO"
    return fds[0]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Path, str, Path]]:
    """A lab whose `watch` job blocks on a FIFO, served by `labgate serve`: (lab dir, base URL,
    FIFO)."""
    lab_dir = write_lab(
        tmp_path / "lab",
        trees={"xen": {"README": "xen\n"}},
        hosts=local_host("italia0", flags=["arch-amd64"]),
        jobs=job("build-amd64", step("compile", f"echo {shlex.quote(EVIL)}; echo built"))
        + job(
            "watch-amd64",
            step("tail", 'echo first-line; cat "$WEB_TEST_FIFO"; echo last-line'),
            step("after", "echo done"),
            depends=["build-amd64"],
        ),
        lab_keys='pass_env = ["WEB_TEST_FIFO"]',  # steps get a clean environment
    )
    repo = lab_dir.trees["xen"]
    repo.commit(EVIL + " sched: fix credit2", author=("Ada Lovelace", "ada@example.com"))
    repo.branch("staging")
    with lab_dir.toml.open("a") as f:
        f.write(f"\n[web]\ntoken = {toml_str(TOKEN)}\n")
    fifo = tmp_path / "watch.fifo"
    os.mkfifo(fifo)
    server = subprocess.Popen(
        labgate(lab_dir.path, "serve", "--listen", "127.0.0.1:0"),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = read_line(server, WAIT_S)
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line
        yield lab_dir.path, match.group(0), fifo
    finally:
        server.terminate()
        server.wait(WAIT_S)


def test_flight_to_job_to_live_log_to_bisection(
    browser: Any, lab: tuple[Path, str, Path], artifact_dir: Path
) -> None:
    lab_dir, base, fifo = lab
    expect = sync_api.expect
    with (lab_dir / "flight.err").open("w") as flight_err:
        flight = subprocess.Popen(
            labgate(lab_dir, "flight", "run", "main"),
            env={**os.environ, "WEB_TEST_FIFO": str(fifo)},
            stdout=subprocess.DEVNULL,
            stderr=flight_err,
        )
    try:
        writer = open_fifo_when_read(fifo)  # the `tail` step is running now
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(base + "/flights")
        page.click("table.flights a[href='/flights/1']")
        expect(page.locator("h1")).to_contain_text("Flight 1")
        expect(page.locator("td.subject")).to_contain_text(EVIL)  # shown as text
        page.screenshot(path=artifact_dir / "1-flight-running.png", full_page=True)

        page.click("a:text-is('watch-amd64')")
        expect(page.locator("h1")).to_contain_text("watch-amd64")
        page.click("tr:has(td:text-is('tail')) a:text-is('log')")
        log = page.locator("#log")
        expect(log).to_contain_text("first-line")
        expect(page.locator("#live")).to_have_text("live")
        assert "last-line" not in log.inner_text()
        page.screenshot(path=artifact_dir / "2-log-live.png", full_page=True)

        os.write(writer, b"middle-line from the test\n")
        os.close(writer)  # the step's `cat` ends, it prints last-line and exits 0
        expect(log).to_contain_text("middle-line from the test")
        expect(log).to_contain_text("last-line")
        expect(page.locator("#live")).to_have_text("ended: pass")
        expect(page.locator("#outcome")).to_have_text("pass")
        expect(page.locator("#exit")).to_have_text("0")
        text = log.inner_text()
        assert text.index("first-line") < text.index("middle-line") < text.index("last-line")
        page.screenshot(path=artifact_dir / "3-log-ended.png", full_page=True)
        assert flight.wait(WAIT_S) == 0
    finally:
        if flight.poll() is None:
            flight.kill()
            flight.wait()

    page.goto(base + "/flights/1")
    expect(page.locator("h1")).to_contain_text("pass")
    page.screenshot(path=artifact_dir / "4-flight-passed.png", full_page=True)
    page.click("a[href='/flights/1/jobs/build-amd64/steps/0/log']")
    expect(page.locator("#log")).to_contain_text(EVIL)  # the log's script is text
    assert page.evaluate("window.__xss") is None

    store = Store.open(f"sqlite:///{lab_dir}/labgate.db")
    try:
        flight_row = store.get_flight(1)
        sha = flight_row.revisions["xen"]
        bisection = store.create_bisection("main", "watch-amd64", "tail", None, 1, None)
        nodes = [
            {"id": c, "tree": "xen", "commit": c * 40, "subject": f"commit {c} {EVIL}",
             "outcomes": o, "probability": p}
            for c, o, p in [("d", ["fail"], 0.0), ("c", ["fail", "fail"], 0.91),
                            ("b", ["pass", "fail"], 0.06), ("a", ["pass"], 0.03)]
        ]  # fmt: skip
        store.update_bisection(
            bisection, state="found", executions=5, rounds=3, flights=[1],
            graph={"nodes": nodes, "edges": [["d", "c"], ["c", "b"], ["b", "a"]]},
            culprit_tree="xen", culprit_commit="c" * 40, confidence=0.91,
        )  # fmt: skip
    finally:
        store.close()
    page.goto(base + "/bisections")
    page.click(f"a[href='/bisections/{bisection}']")
    expect(page.locator(".svg svg")).to_be_visible()
    expect(page.locator(".svg svg g.node")).to_have_count(4)
    expect(page.locator("tr.is-culprit")).to_contain_text("cccccccccccc")
    assert page.evaluate("window.__xss") is None
    page.screenshot(path=artifact_dir / "5-bisection.png", full_page=True)

    page.goto(base + "/login")
    page.fill("input[name=token]", TOKEN)
    page.click("button:text-is('log in')")
    page.goto(base + "/flights/1/jobs/watch-amd64")
    page.click("button:has-text('retest this job')")
    expect(page.locator("h1")).to_contain_text("Flight 2")
    expect(page.locator("h1")).to_contain_text("queued")
    expect(page.locator("td.jobname")).to_have_count(2)  # watch-amd64 and its build
    assert sha in page.content()
    page.screenshot(path=artifact_dir / "6-retest-queued.png", full_page=True)

    store = Store.open(f"sqlite:///{lab_dir}/labgate.db")
    try:
        HostRegistry(store.engine).quarantine("italia0", "console: <b>kernel panic</b>")
    finally:
        store.close()
    for name, path in [("7-history", "/history/main/watch-amd64"), ("8-hosts", "/hosts"),
                       ("9-trends", "/trends?branch=main&job=watch-amd64")]:  # fmt: skip
        page.goto(base + path)
        expect(page.locator("h1")).to_be_visible()
        page.screenshot(path=artifact_dir / f"{name}.png", full_page=True)
    page.close()
