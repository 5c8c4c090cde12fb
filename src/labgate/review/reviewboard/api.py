"""Review Board's Web API (``/api/``), as labgate uses it: JSON resources read and written with
form fields, an API token in ``Authorization: token ...``, lists paged by ``links.next``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from labgate.model import ReviewSpec
from labgate.review.base import secret
from labgate.review.reviewboard.settings import reviewboard_settings

PAGE = 200
"""Items asked per page of a list (Review Board's largest ``max-results``)."""


class ReviewBoardError(Exception):
    """A Review Board API call failed or the connector is not configured; the message says
    which call and what the server answered."""


def api_token(spec: ReviewSpec) -> str:
    """The API token, from the environment variable ``token_env`` names."""
    return secret(spec, reviewboard_settings(spec).token_env, "API token", ReviewBoardError)


class ReviewBoardAPI:
    """Calls to one Review Board server with one API token."""

    def __init__(self, spec: ReviewSpec) -> None:
        self.spec = spec

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.spec.server,
            headers={
                "Authorization": f"token {api_token(self.spec)}",
                "User-Agent": "labgate",
            },
            timeout=60.0,
        )

    async def _send(self, method: str, path: str, accept: str, **kwargs: Any) -> httpx.Response:
        where = f"{method} {path if path.startswith('http') else self.spec.server + path}"
        async with self._client() as client:
            try:
                response = await client.request(method, path, headers={"Accept": accept}, **kwargs)
            except httpx.HTTPError as error:
                raise ReviewBoardError(f"{where}: {error}") from error
        if response.status_code >= 300:
            raise ReviewBoardError(f"{where}: HTTP {response.status_code}: {response.text[:300]}")
        return response

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One JSON resource (``path`` from the server's root, e.g. ``/api/repositories/``)."""
        response = await self._send(method, path, "application/json", params=params, data=data)
        try:
            payload = response.json()
        except ValueError as error:  # a proxy's HTML page, a truncated answer
            raise ReviewBoardError(
                f"{method} {self.spec.server}{path}: the answer is not JSON ({error}): "
                f"{response.text[:100]!r}"
            ) from None
        if not isinstance(payload, dict) or payload.get("stat") != "ok":
            raise ReviewBoardError(f"{method} {self.spec.server}{path}: {str(payload)[:300]}")
        return payload

    async def items(
        self, path: str, key: str, params: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a list resource, following ``links.next`` page after page."""
        query: Mapping[str, str] | None = {**(params or {}), "max-results": str(PAGE)}
        found: list[dict[str, Any]] = []
        while True:
            page = await self.call("GET", path, params=query)
            found += [i for i in page.get(key, []) if isinstance(i, dict)]
            following = page.get("links", {}).get("next")
            if not isinstance(following, dict) or "href" not in following:
                return found
            url = httpx.URL(str(following["href"]))  # absolute: the base URL is not added
            path, query = str(url.copy_with(query=None)), dict(url.params)

    async def raw_diff(self, review_request: str, revision: str) -> bytes:
        """A diff revision as uploaded (``Accept: text/x-patch``)."""
        path = f"/api/review-requests/{review_request}/diffs/{revision}/"
        return (await self._send("GET", path, "text/x-patch")).content
