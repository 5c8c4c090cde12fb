"""On-demand testing in a real browser (Playwright driving Debian's chromium) against a real
`labgate serve` (its pool runs the flights): three people apply on the public page, the lab
admin approves two and refuses one on the admin page, one approved user submits a flight of
their own tree from the form and watches it pass, the other cannot see it until its owner makes
it public on the form page, and is refused a tree URL outside `[access] allow_urls`; then the
first reserves a host, power-cycles it and reads its console, which the other may not.
Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.test_web_browser import WAIT_S, browser, serve  # noqa: F401
from test_access import LAB_TOKEN, access_lab

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[tuple[str, Path]]:
    """`labgate serve` of an access lab on each store: (base URL, the applicant's own tree)."""
    lab_dir, fork = access_lab(tmp_path, database_url)
    with serve(lab_dir) as base:
        yield base, fork.path


def apply(page: Any, base: str, name: str, email: str) -> None:
    page.goto(base + "/access")
    page.fill("input[name=name]", name)
    page.fill("input[name=email]", email)
    page.fill("input[name=affiliation]", "Xen Project community")
    page.fill("textarea[name=why]", "test my scheduler fix on arm64 hardware I do not have")
    page.click("button:text-is('apply')")
    sync_api.expect(page.locator("#applied")).to_contain_text("is recorded")


def log_in(page: Any, base: str, token: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=token]", token)
    page.click("button:text-is('log in')")
    sync_api.expect(page.locator("h1")).to_contain_text("Flights")


def test_two_users_and_an_admin(
    browser: Any,  # noqa: F811
    served: tuple[str, Path],
    artifact_dir: Path,
) -> None:
    base, fork = served
    expect = sync_api.expect
    ada, bob, admin = (browser.new_context().new_page() for _ in range(3))
    apply(ada, base, "Ada Lovelace", "ada@example.com")
    apply(bob, base, "Bob", "bob@example.com")
    apply(bob, base, "Mallory", "mallory@example.com")
    ada.screenshot(path=artifact_dir / "1-applied.png", full_page=True)

    log_in(admin, base, LAB_TOKEN)
    admin.goto(base + "/access/requests")
    expect(admin.locator("#request-3")).to_contain_text("mallory@example.com")
    tokens = {}
    for request, who in ((1, "ada"), (2, "bob")):
        admin.click(f"#request-{request} button:text-is('approve')")
        expect(admin.locator("#given")).to_contain_text(f"{who}@example.com")
        tokens[who] = admin.locator("#token").inner_text()
    admin.fill("#request-3 input[name=why]", "not a community member")
    admin.click("#request-3 button:text-is('refuse')")
    expect(admin.locator("#request-3")).to_contain_text("refused by lab admin")
    expect(admin.locator("#request-3")).to_contain_text("not a community member")
    admin.screenshot(path=artifact_dir / "2-decided.png", full_page=True)

    log_in(ada, base, tokens["ada"])
    ada.goto(base + "/ondemand")
    ada.select_option("select[name=branch]", "main")
    ada.fill("input[name=jobs]", "build")
    ada.fill("input[name=flags]", "arch-arm64")
    ada.fill("input[name=url]", str(fork))
    ada.fill("input[name=ref]", "my-fix")
    ada.click("button:text-is('submit')")
    expect(ada.locator("h1")).to_contain_text("Flight 1")
    expect(ada.locator("h1")).to_contain_text("adhoc")
    expect(ada.locator("h1")).to_contain_text("pass", timeout=WAIT_S * 1000)  # the page reloads
    ada.click("a:text-is('build')")
    ada.click("tr:has(td:text-is('compile')) a:text-is('log')")
    expect(ada.locator("#log")).to_contain_text("ada was here")  # her tree, from the mirror
    ada.screenshot(path=artifact_dir / "3-own-tree-passed.png", full_page=True)

    log_in(bob, base, tokens["bob"])
    bob.goto(base + "/flights/1")
    expect(bob.locator("h1")).to_have_text("404")
    bob.goto(base + "/ondemand")
    bob.fill("input[name=url]", "https://example.com/someone/xen.git")
    bob.fill("input[name=ref]", "master")
    bob.click("button:text-is('submit')")
    expect(bob.locator("#refused")).to_contain_text("is not allowed ([access] allow_urls")
    bob.screenshot(path=artifact_dir / "4-refused.png", full_page=True)

    me = httpx.get(base + "/api/ondemand", headers={"authorization": f"Bearer {tokens['ada']}"})
    assert me.json()["usage"]["flights"] == 0  # it ended
    ada.goto(base + "/ondemand")
    expect(ada.locator("#mine-1")).to_contain_text("pass")
    ada.click("#mine-1 button:text-is('make public')")
    expect(ada.locator("h1")).to_contain_text("Flight 1")
    ada.goto(base + "/ondemand")
    expect(ada.locator("#mine-1")).to_contain_text("everyone")
    bob.goto(base + "/flights/1")
    expect(bob.locator("h1")).to_contain_text("pass")

    ada.select_option("select[name=host]", "arm-0")  # host time, on the same page
    ada.fill("input[name=for]", "1h")
    ada.click("button:text-is('reserve')")
    expect(ada.locator("#reserved-arm-0")).to_be_visible()
    ada.click("#reserved-arm-0 button:text-is('power cycle')")
    expect(ada.locator("#said")).to_have_text("power cycle done: ")
    ada.screenshot(path=artifact_dir / "5-host-time.png", full_page=True)
    ada.goto(base + "/ondemand/hosts/arm-0/console?seconds=1")
    expect(ada.locator("body")).to_have_text("console of arm-0")
    bob.goto(base + "/ondemand/hosts/arm-0/console?seconds=1")
    expect(bob.locator("h1")).to_have_text("403")
    for page in (ada, bob, admin):
        page.close()
