"""The performance pages: a branch's metrics (``/perf/{branch}``), each metric's trend with its
change points (``/perf/{branch}/{job}/{step}/{metric}``: a plot per host class, every point and
change point linking to its flight), and the same as JSON under ``/api/perf/``.

Every read takes the request's viewer: an embargoed flight's values are not in the trend of
someone who may not see the flight, nor are the change points they would make, and a branch or
metric with nothing the viewer may see is missing (404) like one that does not exist."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from labgate.model import FlightResult, JobResult
from labgate.perf.history import MetricSeries, history_json, metric_series, trend_path
from labgate.store.metrics import MetricSummary
from labgate.web import plots

if TYPE_CHECKING:
    from labgate.web.pages import Web


def _metrics_or_404(web: Web, request: Request) -> tuple[str, list[MetricSummary]]:
    from labgate.web.pages import viewer_of

    branch = request.path_params["branch"]
    metrics = web.store.branch_metrics(branch, viewer=viewer_of(request))
    if not metrics:
        raise HTTPException(404, f"branch {branch!r} has no metrics in its real flights")
    return branch, metrics


def _series_or_404(
    web: Web, request: Request
) -> tuple[tuple[str, str, str, str], list[MetricSeries]]:
    from labgate.web.pages import viewer_of

    p = request.path_params
    key = (p["branch"], p["job"], p["step"], p["metric"])
    stored = web.store.metric_history(*key, viewer=viewer_of(request))
    if not stored:
        branch, job, step, metric = key
        raise HTTPException(404, f"no values of {metric!r} of {job} {step} on branch {branch!r}")
    series = metric_series(stored, min_change=web.lab.perf_for(key[1], key[2]).min_change)
    return key, series


def perf_index(web: Web, request: Request) -> Response:
    branch, metrics = _metrics_or_404(web, request)
    rows = [(m, trend_path(branch, m.job, m.step, m.metric)) for m in metrics]
    return web.render(request, "perf.html", {"branch": branch, "rows": rows})


def perf_trend(web: Web, request: Request) -> Response:
    (branch, job, step, metric), series = _series_or_404(web, request)
    charts = [trend_chart(branch, job, step, metric, one) for one in series]
    context = {
        "branch": branch,
        "job": job,
        "step": step,
        "metric": metric,
        "series": series,
        "charts": charts,
    }
    return web.render(request, "perf_trend.html", context)


def trend_chart(branch: str, job: str, step: str, metric: str, series: MetricSeries) -> str:
    """The SVG trend of one host class's series, its points and change points linked to their
    flights' pages."""
    unit = series.unit
    points = [
        plots.TrendPoint(
            p.flight,
            p.value,
            f"flight {p.flight}: {p.value:g} {unit} (median of {p.runs} runs)",
            f"/flights/{p.flight}",
        )
        for p in series.points
    ]
    markers = [
        plots.ChangeMarker(
            series.points[c.index].flight,
            f"{c.relative_change:+.1%}",
            f"change at flight {series.points[c.index].flight}: {c.relative_change:+.1%}"
            f" ({c.before:g} -> {c.after:g} {unit})",
            f"/flights/{series.points[c.index].flight}",
        )
        for c in series.changes
    ]
    title = f"{branch}: {job} {step} {metric} [{series.host_class}] ({unit})"
    return plots.trend_chart(points, markers, title=title, y_format=lambda v: f"{v:.4g}")


def api_index(web: Web, request: Request) -> Response:
    branch, metrics = _metrics_or_404(web, request)
    items = [
        {
            "job": m.job,
            "step": m.step,
            "metric": m.metric,
            "flights": m.flights,
            "newest": m.newest,
            "trend": trend_path(branch, m.job, m.step, m.metric),
        }
        for m in metrics
    ]
    return JSONResponse({"items": items, "next": None})  # the API's one list shape, one page


def api_trend(web: Web, request: Request) -> Response:
    key, series = _series_or_404(web, request)
    return JSONResponse(history_json(*key, series))


def job_trends(web: Web, flight: FlightResult, job: JobResult) -> list[tuple[str, str]]:
    """(``step metric``, its trend page) for each metric the job measured in ``flight`` (whose
    page the viewer may see already), for the job page to link to."""
    names = {
        (m.step, m.metric.name): None
        for m in web.store.flight_metrics([flight.id])
        if m.job == job.name
    }
    return [
        (f"{step} {metric}", trend_path(flight.branch, job.name, step, metric))
        for step, metric in names
    ]


def routes(web: Web) -> Sequence[Route]:
    """The pages and their API, each bound to the request's viewer like every other page."""
    from labgate.web.pages import bind

    trend = "/perf/{branch}/{job}/{step}/{metric:path}"
    table = [
        ("/perf/{branch}", perf_index),
        (trend, perf_trend),
        ("/api/perf/{branch}", api_index),
        ("/api" + trend, api_trend),
    ]
    return [Route(path, bind(web, endpoint), methods=["GET"]) for path, endpoint in table]
