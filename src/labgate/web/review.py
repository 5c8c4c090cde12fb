"""The ready-to-vote page (``/review``): what ``labgate review discrepancies`` prints, per review
target, and each patch set where labgate and another CI account disagree."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from labgate.review.readiness import duration, share

if TYPE_CHECKING:
    from labgate.web.pages import Web

LAST = 50


def review_page(web: Web, request: Request) -> Response:
    from labgate.web.pages import int_param

    last = int_param(request, "last") or LAST
    context = {
        "last": last,
        "targets": web.store.review.readiness(last),
        "found": web.store.review.discrepancies(),
        "duration": duration,
        "share": share,
    }
    return web.render(request, "review.html", context)
