"""The Review Board webhook receiver over real HTTP (uvicorn on a loopback port): deliveries
signed as Review Board signs them (``X-Hub-Signature: sha1=`` HMAC of the body,
reviewboard/notifications/webhooks.py), and each malformed, unsigned or misdirected one refused
with a 4xx naming the problem. What a real Review Board server sends is tested in
tests/integration/test_serve_review.py."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fakegithub import ServerThread
from labgate.config import load_lab
from labgate.review.base import ChangeEvent
from labgate.review.reviewboard.webhook import reviewboard_routes
from labgate.store import Store
from reviewlab import make_review_lab

SECRET_ENV = "LABGATE_TEST_RB_SECRET"
SECRET = "a webhook secret"
RB = "http://rb.example.org"


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def request_payload(rr: int, revision: int, *, repository: str = "xen") -> dict[str, Any]:
    """A review request as Review Board's API (and its webhooks) serialize it."""
    api = f"{RB}/api/review-requests/{rr}"
    return {
        "id": rr,
        "public": True,
        "status": "pending",
        "branch": "",
        "summary": "fix it",
        "absolute_url": f"{RB}/r/{rr}/",
        "links": {
            "latest_diff": {"href": f"{api}/diffs/{revision}/", "method": "GET"},
            "repository": {"href": f"{RB}/api/repositories/1/", "title": repository},
            "self": {"href": f"{api}/", "method": "GET"},
            "submitter": {"href": f"{RB}/api/users/ann/", "title": "ann"},
        },
    }


@dataclass
class Receiver:
    url: str
    store: Store

    def post(
        self,
        event: str | None,
        payload: Any = None,
        *,
        body: bytes | None = None,
        signature: str | None = "sign",
        content_type: str = "application/json",
        name: str = "rb",
    ) -> httpx.Response:
        raw = body if body is not None else json.dumps(payload).encode()
        headers = {"Content-Type": content_type, "User-Agent": "ReviewBoard-WebHook/8.1"}
        if event is not None:
            headers["X-ReviewBoard-Event"] = event
        if signature is not None:
            headers["X-Hub-Signature"] = sign(raw) if signature == "sign" else signature
        return httpx.post(f"{self.url}/review/reviewboard/{name}", content=raw,
                          headers=headers, timeout=30)  # fmt: skip


@pytest.fixture
def receiver(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Receiver]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    entries = [("rb", f'secret_env = "{SECRET_ENV}"'), ("rb-polled", "")]
    extra = "".join(
        f'\n[[review]]\nname = "{name}"\ndriver = "reviewboard"\nserver = "{RB}"\n'
        f'project = "xen"\nbranch = "main"\ntoken_env = "LABGATE_TEST_RB_TOKEN"\n{keys}\n'
        for name, keys in entries
    )
    rl = make_review_lab(tmp_path, database_url, extra=extra)
    rl = replace(rl, lab=load_lab(rl.path))
    with Store.open(rl.lab.database_url) as store:
        app = Starlette(routes=reviewboard_routes(rl.lab, store))
        with ServerThread(app) as server:
            yield Receiver(server.url, store)


def refusal(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, str(response.json()["error"])


def test_a_signed_publish_queues_the_latest_diff_and_a_close_drops_it(
    receiver: Receiver,
) -> None:
    published = {"event": "review_request_published", "review_request": request_payload(7, 2)}
    answer = receiver.post("review_request_published", published)
    assert (answer.status_code, answer.json()) == (202, {"status": "queued"})
    again = receiver.post("review_request_published", published)
    assert again.json() == {"status": "already queued"}
    [run] = receiver.store.review.runs("rb")
    assert (run.change, run.patchset, run.state) == ("7", "2", "queued")

    other = {"review_request": request_payload(8, 1, repository="linux")}
    assert receiver.post("review_request_published", other).json() == {"status": "ignored"}
    assert receiver.post("reply_published", published).json() == {"status": "ignored"}

    closed = {"close_type": "discarded", "review_request": request_payload(7, 2)}
    assert receiver.post("review_request_closed", closed).json() == {"status": "closed"}
    [run] = receiver.store.review.runs("rb")
    assert (run.state, run.reason) == ("superseded", "the change was discarded")


def test_a_recheck_review_is_queued_once(receiver: Receiver) -> None:
    receiver.store.review.enqueue(
        ChangeEvent(kind="patchset", source="rb", project="xen", change="7", patchset="1",
                    ref="review-requests/7/diffs/1", revision="", branch="")
    )  # fmt: skip
    receiver.store.review.mark_voted(receiver.store.review.runs("rb")[0].id)
    review = {"id": 31, "body_top": "recheck",
              "links": {"self": {"href": f"{RB}/api/review-requests/7/reviews/31/"}}}  # fmt: skip
    payload = {"review": review, "review_request": request_payload(7, 1)}
    assert receiver.post("review_published", payload).json() == {"status": "queued"}
    assert receiver.post("review_published", payload).json() == {"status": "already queued"}
    chat = {**payload, "review": {**review, "id": 32, "body_top": "looks fine"}}
    assert receiver.post("review_published", chat).json() == {"status": "ignored"}
    assert [(r.kind, r.attempt) for r in receiver.store.review.runs("rb")] == [
        ("patchset", 1),
        ("recheck", 2),
    ]


def test_bad_deliveries_are_refused_naming_the_problem(receiver: Receiver) -> None:
    good = {"review_request": request_payload(7, 1)}
    event = "review_request_published"
    assert refusal(receiver.post(event, good, signature=None)) == (
        401,
        "no X-Hub-Signature header (is the webhook's secret set?)",
    )
    wrong = sign(json.dumps(good).encode(), "another secret")
    assert refusal(receiver.post(event, good, signature=wrong)) == (
        401,
        "X-Hub-Signature does not match the body (another secret?)",
    )
    assert refusal(receiver.post(None, good)) == (400, "no X-ReviewBoard-Event header")
    assert refusal(
        receiver.post(
            event, body=b"payload=%7B%7D", content_type="application/x-www-form-urlencoded"
        )
    ) == (
        415,
        "content type application/x-www-form-urlencoded: want application/json",
    )
    assert refusal(receiver.post(event, body=b"[1, 2]")) == (400, "body is not a JSON object")
    assert refusal(receiver.post(event, {"review_request": {"links": {}}})) == (
        400,
        "review_request_published: no review_request object with an id in the body",
    )
    assert refusal(receiver.post(event, good, name="nope")) == (
        404,
        "no [[review]] named 'nope' with driver reviewboard",
    )
    assert refusal(receiver.post(event, good, name="rb-polled")) == (
        403,
        "[[review]] rb-polled: webhooks are not enabled (set secret_env)",
    )
    assert receiver.store.review.runs() == []
