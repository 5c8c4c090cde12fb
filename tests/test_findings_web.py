"""The dashboard's findings pages through HTTP, on both stores: a flight's findings with links to
the file at the tested revision, triage behind the token and CSRF, the per-rule trend."""

from __future__ import annotations

import re

from labgate.findings.model import Finding, Level
from test_web import EVIL, TOKEN, Fixture, _login, _post, web  # noqa: F401


def record(fixture: Fixture, flight: int, rule: str, identity: str) -> Finding:
    found = Finding(
        job="build", step="compile", rule=rule, level=Level.ERROR, message=f"{EVIL} in README",
        path="xen/README", line=1, column=1, function="", identity=identity, snippet_key=rule,
        tool="Cppcheck",
    )  # fmt: skip
    [build, _] = fixture.store.flight_jobs(flight)
    fixture.store.record_findings(build.step_ids[0], [found])
    return found


def test_a_flights_findings_link_to_the_file_at_its_revision(web: Fixture) -> None:  # noqa: F811
    before, after = web.flights[0], web.flights[1]
    record(web, before, "memleak", "a" * 20)
    new = record(web, after, "nullPointer", "b" * 20)
    page = web.client.get(f"/flights/{after}/findings")
    assert page.status_code == 200
    assert f'baseline flight <a href="/flights/{before}">{before}</a>' in page.text
    assert "<strong>1</strong> new (1 blocking) · 1 fixed · 0 unchanged" in page.text
    assert f'href="/source/xen/{web.sha}/README#L1">xen/README:1</a>' in page.text
    assert EVIL not in page.text and "&lt;script&gt;" in page.text
    assert f'id="f-{new.identity}"' in page.text
    assert (
        f'href="/flights/{after}/findings">1 findings</a>'
        in web.client.get(f"/flights/{after}").text
    )
    source = web.client.get(f"/source/xen/{web.sha}/README")
    assert source.status_code == 200
    assert re.search(r'<tr id="L1"><td class="num"><a href="#L1">1</a></td><td><pre>xen</pre>',
                     source.text)  # fmt: skip
    for bad in (f"/source/linux/{web.sha}/README", f"/source/xen/{web.sha}/nothing",
                "/source/xen/zzzz/README", f"/source/xen/{web.sha}/a/%2E%2E/README"):  # fmt: skip
        assert web.client.get(bad).status_code == 404, bad
    trend = web.client.get("/findings/trend?branch=main")
    assert trend.status_code == 200 and "<svg" in trend.text and "nullPointer" in trend.text
    assert web.client.get("/findings/trend?branch=nope").status_code == 404


def test_triage_from_the_web_needs_the_token_and_is_kept(web: Fixture) -> None:  # noqa: F811
    flight = web.flights[1]
    new = record(web, flight, "nullPointer", "c" * 20)
    action = f"/findings/{new.identity}/triage"
    form = f"flight={flight}&state=false-positive&reason=checked+by+hand&by=ann"
    assert _post(web.client, action, form).status_code == 403  # not logged in
    assert 'action="/findings/' not in web.client.get(f"/flights/{flight}/findings").text
    csrf = _login(web.client)
    assert _post(web.client, action, form).status_code == 403  # no CSRF value
    missing = _post(web.client, action, f"csrf={csrf}&flight={flight}&state=intentional")
    assert missing.status_code == 400 and "reason and by" in missing.text
    done = _post(web.client, action, f"csrf={csrf}&{form}")
    assert done.status_code == 303
    assert done.headers["location"] == f"/flights/{flight}/findings#f-{new.identity}"
    said = web.store.triage_of([new.identity])[new.identity]
    assert (said.state, said.reason, said.by) == ("false-positive", "checked by hand", "ann")
    page = web.client.get(f"/flights/{flight}/findings").text
    assert "false-positive by ann: checked by hand" in page
    assert "(1 blocking)" not in page
    cleared = _post(web.client, action, f"csrf={csrf}&flight={flight}&state=none")
    assert cleared.status_code == 303 and web.store.triage_of([new.identity]) == {}


def test_a_program_triages_with_the_bearer_token(web: Fixture) -> None:  # noqa: F811
    flight = web.flights[1]
    new = record(web, flight, "nullPointer", "d" * 20)
    form = f"flight={flight}&state=intentional&reason=a+test+of+the+checker&by=ci-bot"
    action = f"/findings/{new.identity}/triage"
    wrong = _post(web.client, action, form, authorization="Bearer " + "x" * 24)
    assert wrong.status_code == 403 and web.store.triage_of([new.identity]) == {}
    done = _post(web.client, action, form, authorization=f"Bearer {TOKEN}")
    assert done.status_code == 303
    assert web.store.triage_of([new.identity])[new.identity].by == "ci-bot"
    unknown = _post(web.client, "/findings/nothex/triage", form, authorization=f"Bearer {TOKEN}")
    assert unknown.status_code == 404


def test_unchanged_findings_are_counted_and_listed_on_demand(web: Fixture) -> None:  # noqa: F811
    before, after = web.flights[0], web.flights[1]
    record(web, before, "memleak", "e" * 20)
    record(web, after, "memleak", "e" * 20)
    page = web.client.get(f"/flights/{after}/findings").text
    assert "0 fixed · 1 unchanged" in page and 'id="f-eeee' not in page
    assert f'href="/flights/{after}/findings?unchanged=1">show them</a>' in page
    shown = web.client.get(f"/flights/{after}/findings?unchanged=1").text
    assert 'id="f-eeeeeeeeeeeeeeeeeeee" class="state-unchanged"' in shown
    assert "hide them</a>" in shown
