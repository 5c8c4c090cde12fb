"""On-demand testing on the dashboard: the public access request form, the lab admin's page of
requests (approve, refuse), the on-demand flight form of an approved user, making a flight
public, the queue, and host time (reserve a host; its console and power cycle while reserved);
each with its JSON API twin.

The person applying is anonymous: their form is refused from another site (as the login form
is). Every other action is a logged-in browser's form carrying its CSRF value, or an API call
with a bearer token; approving and refusing need the lab's token.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from labgate.access import hosttime
from labgate.access.fetch import Refused
from labgate.access.ondemand import OnDemand, check_approved, submit
from labgate.access.queue import standing
from labgate.access.ratelimit import Limited, RateLimiter, apply_limiter, submit_limiter
from labgate.store import StoreError
from labgate.store.access import PENDING, AccessRequests
from labgate.web import pages
from labgate.web.api import listing
from labgate.web.auth import same_origin
from labgate.web.pages import Web, _form, authorize, bind, viewer_of

BODY_LIMIT = 64 * 1024


def _requests(web: Web) -> AccessRequests:
    return AccessRequests(web.store.engine)


async def user_form(web: Web, request: Request) -> dict[str, str]:
    """A logged-in user's form, refused without its CSRF value or from another site."""
    form = await _form(request)
    expected = web.access.csrf_for(request)
    if expected is None or form.get("csrf") != expected or not same_origin(request):
        raise HTTPException(403, "log in first (and post from this site)")
    return form


# --- applying and deciding ---------------------------------------------------------------------


def access_form(web: Web, request: Request) -> Response:
    return web.render(request, "access_apply.html", {"error": None, "form": {}, "done": None})


async def access_apply(web: Web, request: Request) -> Response:
    form = await _form(request)
    fields = {k: form.get(k, "") for k in ("name", "email", "affiliation", "why")}
    if not same_origin(request):
        raise HTTPException(403, "apply from this site's form")
    try:
        done = await asyncio.to_thread(_requests(web).apply, **fields)
    except StoreError as error:
        context = {"error": str(error), "form": fields, "done": None}
        return web.render(request, "access_apply.html", context, 400)
    return web.render(request, "access_apply.html", {"error": None, "form": {}, "done": done})


def rate_limited(limiter: RateLimiter, endpoint: Any) -> Any:
    """``endpoint`` answering only requests within the access form's limits (per client
    address); others get 429, the limit they are over and ``Retry-After``."""

    async def limited(web: Web, request: Request) -> Response:
        try:
            limiter.hit(request.client.host if request.client else "unknown")
        except Limited as over:
            error = f"{over.message}; try again in {over.retry_after} s"
            context: dict[str, Any] = {"error": error, "form": {}, "done": None}
            page = await asyncio.to_thread(web.render, request, "access_apply.html", context, 429)
            page.headers["Retry-After"] = str(over.retry_after)
            return page
        if asyncio.iscoroutinefunction(endpoint):
            return await endpoint(web, request)  # type: ignore[no-any-return]
        return await asyncio.to_thread(endpoint, web, request)  # type: ignore[no-any-return]

    return limited


def user_limited(limiter: RateLimiter, endpoint: Any, api: bool = True) -> Any:
    """``endpoint`` (async) answering a user's requests within their limit (the lab admin, and
    those not logged in, are refused or served by the endpoint itself); others get 429, the
    limit (rule ``submit_limit``) and ``Retry-After``, as JSON or on the on-demand page."""

    async def limited(web: Web, request: Request) -> Response:
        viewer = viewer_of(request)
        try:
            if viewer.user is not None and not viewer.admin:
                limiter.hit(viewer.user)
        except Limited as over:
            refused = Refused(
                "submit_limit", f"{over.message}; try again in {over.retry_after} s", 429
            )
            if api:
                answer: Response = JSONResponse(refused.to_json(), status_code=429)
            else:
                answer = await asyncio.to_thread(
                    _ondemand_page, web, request, refused.message, {}, 429
                )
            answer.headers["Retry-After"] = str(over.retry_after)
            return answer
        return await endpoint(web, request)  # type: ignore[no-any-return]

    return limited


def _admin(request: Request) -> None:
    if not viewer_of(request).admin:
        raise HTTPException(403, "the lab admin's page: log in with the lab's token")


def access_requests(web: Web, request: Request) -> Response:
    _admin(request)
    found = _requests(web).requests()
    return web.render(
        request, "access_requests.html", {"requests": found, "pending": PENDING, "given": None}
    )


async def _decide(web: Web, request: Request, form: dict[str, str]) -> tuple[str, str] | None:
    """Approve or refuse the path's request (by the lab admin); the user and token approved."""
    request_id: int = request.path_params["request_id"]
    requests = _requests(web)
    try:
        if request.url.path.endswith("/approve"):
            return await asyncio.to_thread(
                requests.approve,
                request_id,
                by=form.get("by") or "lab admin",
                group=form.get("group") or web.lab.access.group,
                user=form.get("user") or None,
                why=form.get("why", ""),
                token_days=web.lab.access.token_days,
            )
        await asyncio.to_thread(
            requests.refuse, request_id, by=form.get("by") or "lab admin", why=form.get("why", "")
        )
    except StoreError as error:
        raise HTTPException(409, str(error)) from None
    return None


async def access_decide(web: Web, request: Request) -> Response:
    form = await _form(request)
    await authorize(web, request)
    given = await _decide(web, request, form)
    found = await asyncio.to_thread(_requests(web).requests)
    context = {"requests": found, "pending": PENDING, "given": given}
    return web.render(request, "access_requests.html", context)


def api_access_requests(web: Web, request: Request) -> Response:
    _admin(request)
    return listing(request, _requests(web).requests())


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if len(body) > BODY_LIMIT:
        raise HTTPException(413, "body too large")
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None


async def api_access_decide(web: Web, request: Request) -> Response:
    await authorize(web, request)
    body = await _json_body(request)
    if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
        raise HTTPException(400, "the body is a JSON object of strings (group, user, why, by)")
    given = await _decide(web, request, body)
    request_id: int = request.path_params["request_id"]
    answer: dict[str, Any] = _requests(web).get(request_id).to_json()
    if given is not None:
        answer["token"] = given[1]  # shown this once
    return JSONResponse(answer)


# --- on-demand flights -----------------------------------------------------------------------


def ondemand_form(web: Web, request: Request) -> Response:
    return _ondemand_page(web, request, None, {}, 200)


def _ondemand_page(
    web: Web,
    request: Request,
    error: str | None,
    form: dict[str, str],
    status: int,
    said: str | None = None,
) -> Response:
    viewer = viewer_of(request)
    branches = pages.visible_branches(web, viewer)
    approved = viewer.user is not None and web.lab.access.approved(viewer.groups)
    user = viewer.user if approved else None
    context = {
        "error": error,
        "form": form,
        "approved": approved,
        "choices": branches,
        "mine": _requests(web).owned(user) if user else [],
        "hosts": [h.name for h in web.lab.hosts],
        "reservations": hosttime.mine(web.lab, web.store, user) if user else [],
        "said": said,
    }
    return web.render(request, "access_ondemand.html", context, status)


async def _submit(web: Web, request: Request, data: Any) -> int:
    asked = OnDemand.from_json(data)
    viewer = viewer_of(request)
    return await asyncio.to_thread(submit, web.lab, web.store, web.mirrors, viewer, asked)


async def ondemand_submit(web: Web, request: Request) -> Response:
    form = await user_form(web, request)
    data: dict[str, Any] = {
        k: form[k] for k in ("branch", "jobs", "flags", "url", "ref", "tree") if form.get(k)
    }
    data["public"] = form.get("public") == "on"
    try:
        flight_id = await _submit(web, request, data)
    except Refused as refused:
        return _ondemand_page(web, request, refused.message, form, refused.status)
    return RedirectResponse(f"/flights/{flight_id}", status_code=303)


async def api_ondemand_submit(web: Web, request: Request) -> Response:
    try:
        flight_id = await _submit(web, request, await _json_body(request))
    except Refused as refused:
        return JSONResponse(refused.to_json(), status_code=refused.status)
    return JSONResponse({"id": flight_id, "url": f"/flights/{flight_id}"}, status_code=201)


async def _make_public(web: Web, request: Request) -> int:
    flight_id: int = request.path_params["flight_id"]
    viewer = viewer_of(request)
    user = viewer.user if not viewer.admin else None
    done = user is not None and await asyncio.to_thread(_requests(web).make_public, flight_id, user)
    if not done:
        raise HTTPException(404, f"no on-demand flight {flight_id} of yours")
    return flight_id


async def ondemand_public(web: Web, request: Request) -> Response:
    await user_form(web, request)
    flight_id = await _make_public(web, request)
    return RedirectResponse(f"/flights/{flight_id}", status_code=303)


async def api_ondemand_public(web: Web, request: Request) -> Response:
    flight_id = await _make_public(web, request)
    return JSONResponse({"id": flight_id, "public": True})


# --- host time --------------------------------------------------------------------------------


async def hosts_reserve(web: Web, request: Request) -> Response:
    form = await user_form(web, request)
    name, wanted = form.get("host", ""), form.get("for", "")
    viewer = viewer_of(request)
    try:
        await asyncio.to_thread(hosttime.reserve, web.lab, web.store, viewer, name, wanted)
    except Refused as refused:
        return _ondemand_page(web, request, refused.message, form, refused.status)
    return RedirectResponse("/ondemand", status_code=303)


async def api_host_reserve(web: Web, request: Request) -> Response:
    body = await _json_body(request)
    wanted = body.get("for") if isinstance(body, dict) else None
    if not isinstance(wanted, str):
        refused = Refused("request", 'the body is {"for": "2h"}', 400)
        return JSONResponse(refused.to_json(), status_code=refused.status)
    name: str = request.path_params["name"]
    viewer = viewer_of(request)
    try:
        held = await asyncio.to_thread(hosttime.reserve, web.lab, web.store, viewer, name, wanted)
    except Refused as refused:
        return JSONResponse(refused.to_json(), status_code=refused.status)
    return JSONResponse(held.to_json(), status_code=201)


def _seconds(request: Request) -> float:
    return float(pages.int_param(request, "seconds") or 5)


async def host_console(web: Web, request: Request) -> Response:
    """The host's console for a few seconds (``?seconds=N``, at most 30), as text."""
    name: str = request.path_params["name"]
    viewer = viewer_of(request)
    try:
        text = await hosttime.console(web.lab, web.store, viewer, name, _seconds(request))
    except Refused as refused:
        if request.url.path.startswith("/api/"):
            return JSONResponse(refused.to_json(), status_code=refused.status)
        raise HTTPException(refused.status, refused.message) from None
    return PlainTextResponse(text)


async def _power_cycle(web: Web, request: Request) -> tuple[bool, str]:
    name: str = request.path_params["name"]
    return await hosttime.power_cycle(web.lab, web.store, viewer_of(request), name)


async def host_power_cycle(web: Web, request: Request) -> Response:
    await user_form(web, request)
    try:
        ok, output = await _power_cycle(web, request)
    except Refused as refused:
        return _ondemand_page(web, request, refused.message, {}, refused.status)
    said = f"power cycle {'done' if ok else 'failed'}: {output}"
    return _ondemand_page(web, request, None, {}, 200 if ok else 502, said)


async def api_host_power_cycle(web: Web, request: Request) -> Response:
    try:
        ok, output = await _power_cycle(web, request)
    except Refused as refused:
        return JSONResponse(refused.to_json(), status_code=refused.status)
    return JSONResponse({"ok": ok, "output": output}, status_code=200 if ok else 502)


def queue_page(web: Web, request: Request) -> Response:
    found = standing(web.lab, web.store, viewer_of(request))
    return web.render(request, "access_queue.html", {"places": found})


def api_queue(web: Web, request: Request) -> Response:
    return listing(request, standing(web.lab, web.store, viewer_of(request)))


def api_approved(web: Web, request: Request) -> Response:
    """Who the token is and whether they may submit (and their quota)."""
    viewer = viewer_of(request)
    try:
        user = check_approved(web.lab, viewer)
    except Refused as refused:
        return JSONResponse(refused.to_json(), status_code=refused.status)
    quota = web.lab.access.user_quota(user)
    usage = _requests(web).usage([user])[user]
    return JSONResponse(
        {
            "user": user,
            "quota": {"flights": quota.flights, "host_hours": quota.host_hours},
            "usage": {"flights": usage.flights, "host_hours": round(usage.host_seconds / 3600, 3)},
        }
    )


def routes(web: Web) -> list[Route]:
    request = "/access/requests/{request_id:int}"
    public = "/ondemand/flights/{flight_id:int}/public"
    host = "/ondemand/hosts/{name}"
    limiter = apply_limiter(web.lab.access.apply_limit)  # the page and its POST together
    submits = submit_limiter(web.lab.access.submit_limit)  # flights and reservations together
    table = [
        ("/access", rate_limited(limiter, access_form), ["GET"]),
        ("/access", rate_limited(limiter, access_apply), ["POST"]),
        ("/access/requests", access_requests, ["GET"]),
        (request + "/approve", access_decide, ["POST"]),
        (request + "/refuse", access_decide, ["POST"]),
        ("/api/access/requests", api_access_requests, ["GET"]),
        ("/api" + request + "/approve", api_access_decide, ["POST"]),
        ("/api" + request + "/refuse", api_access_decide, ["POST"]),
        ("/ondemand", ondemand_form, ["GET"]),
        ("/ondemand", user_limited(submits, ondemand_submit, api=False), ["POST"]),
        (public, ondemand_public, ["POST"]),
        ("/ondemand/queue", queue_page, ["GET"]),
        ("/ondemand/hosts", user_limited(submits, hosts_reserve, api=False), ["POST"]),
        (host + "/console", host_console, ["GET"]),
        (host + "/power-cycle", host_power_cycle, ["POST"]),
        ("/api" + host + "/reserve", user_limited(submits, api_host_reserve), ["POST"]),
        ("/api" + host + "/console", host_console, ["GET"]),
        ("/api" + host + "/power-cycle", api_host_power_cycle, ["POST"]),
        ("/api/ondemand", api_approved, ["GET"]),
        ("/api/ondemand/flights", user_limited(submits, api_ondemand_submit), ["POST"]),
        ("/api" + public, api_ondemand_public, ["POST"]),
        ("/api/ondemand/queue", api_queue, ["GET"]),
    ]
    return [Route(path, bind(web, endpoint), methods=methods) for path, endpoint, methods in table]
