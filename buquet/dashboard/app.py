"""The dashboard's Starlette application: thin routes over :class:`.views.Dashboard`.

Pages: ``/`` (overview), ``/tasks`` (list), ``/tasks/{id}`` (detail),
``/tasks/{id}/input`` and ``/output`` (payloads, JSON, loaded on demand),
``/schedules``, ``/workers``. Actions (``POST /tasks/{id}/{cancel|request-cancel|retry|archive|delete}``,
``POST /schedules/{id}/{enable|disable|trigger}``) answer 403 unless the app was
created with ``allow_actions=True``; then they need the page's CSRF token and a
same-origin request.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import secrets
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Union
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .._humanize import span
from ..errors import BuquetError, ScheduleNotFound, StorageError, TaskNotFound
from ..queue import Queue
from . import params as p
from .chart import svg
from .views import TASK_ACTIONS, Cost, Dashboard

log = logging.getLogger("buquet.dashboard")
HERE = Path(__file__).parent
TASK_VERBS = ("cancel", "request-cancel", "retry", "archive", "delete")
SCHEDULE_VERBS = ("enable", "disable", "trigger")
QueueSource = Union[Queue, Callable[[], Union[Queue, Awaitable[Queue]]]]


def _ts(value: datetime | None) -> str:
    """A UTC timestamp to the second (``2026-12-01 23:14:05``), ``"–"`` for ``None``."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else "–"


def _pretty(value: Any) -> str:
    """Indented JSON (what the task page shows for inputs and outputs)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


async def _sample_forever(dash: Dashboard, seconds: float) -> None:
    """Throughput samples every ``seconds`` until cancelled; a failed sample is logged."""
    while True:
        try:
            await dash.sample()
        except Exception as exc:  # noqa: BLE001 - a store hiccup must not stop sampling
            log.warning("dashboard: throughput sample failed: %s", exc)
        await asyncio.sleep(seconds)


def create_app(queue: QueueSource, *, allow_actions: bool = False, scan_limit: int | None = None,
               sample_seconds: float | None = None) -> Starlette:
    """The dashboard as an ASGI app (serve it with uvicorn).

    Args:
        queue: an open :class:`~buquet.Queue` (used as is, never closed), or a function
            (sync or async) returning one, called at startup inside the server's event
            loop and closed at shutdown — use this with S3 stores, whose connections
            belong to the loop that opened them.
        allow_actions: offer and accept cancel/retry/archive/delete and the schedule
            actions; when ``False`` every action answers 403.
        scan_limit: most task objects one task-list page reads (default 500).
        sample_seconds: also sample the workers' counters for the throughput chart
            every this many seconds in the background (1 LIST + 1 GET per worker each
            time); ``None`` = only when the overview or workers page is viewed.

    Returns:
        A Starlette application.
    """
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.filters.update(ago=lambda seconds: span(seconds, "–"), ts=_ts, pretty=_pretty)
    csrf_token = secrets.token_urlsafe(32)
    state: dict[str, Dashboard] = {}
    kwargs = {} if scan_limit is None else {"scan_limit": scan_limit}

    owned = not isinstance(queue, Queue)
    if not owned:  # usable even by a server that runs no lifespan
        state["dash"] = Dashboard(queue, **kwargs)  # type: ignore[arg-type]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if owned:
            made = queue()  # type: ignore[operator]
            q = await made if inspect.isawaitable(made) else made
            state["dash"] = Dashboard(q, **kwargs)
        app.state.dashboard = state["dash"]
        sampler = asyncio.create_task(_sample_forever(state["dash"], sample_seconds)) if sample_seconds else None
        try:
            yield
        finally:
            if sampler is not None:
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
            if owned:
                await state["dash"].queue.close()

    def dash() -> Dashboard:
        return state["dash"]

    def render(request: Request, name: str, cost: Cost | None, status_code: int = 200, **ctx: Any) -> Response:
        ctx.update(request=request, allow_actions=allow_actions, csrf=csrf_token, cost=cost,
                   message=request.query_params.get("msg"), error=request.query_params.get("error"))
        return templates.TemplateResponse(request, name, ctx, status_code=status_code)

    def bad(request: Request, exc: p.BadParam) -> Response:
        return render(request, "error.html", None, status_code=400, title="Bad request",
                      detail=f"Query parameter {exc.name!r}: {exc.reason}", param=exc.name)

    def not_found(request: Request, what: str) -> Response:
        return render(request, "error.html", None, status_code=404, title="Not found", detail=what, param=None)

    # --------------------------------------------------------------- pages
    async def overview(request: Request) -> Response:
        async with dash().measured() as cost:
            data = await dash().overview()
        return render(request, "overview.html", cost, page="overview", o=data, chart=svg(data.throughput))

    async def tasks(request: Request) -> Response:
        try:
            now = await dash().now()
            query = p.parse_task_query(request.query_params, dash().shards, now)
        except p.BadParam as exc:
            return bad(request, exc)
        async with dash().measured() as cost:
            page = await dash().task_page(query)
        next_url = None
        if page.next_before:
            next_url = "/tasks?" + urlencode({**query.raw, "before": page.next_before})
        first_url = "/tasks?" + urlencode({k: val for k, val in query.raw.items() if k != "before"})
        return render(request, "tasks.html", cost, page="tasks", q=query, result=page, next_url=next_url,
                      first_url=first_url, statuses=[s.value for s in p.TaskStatus],
                      shards=dash().shards, since_choices=p.SINCE_CHOICES, scan_limit=dash().scan_limit)

    async def task(request: Request) -> Response:
        try:
            task_id = p.parse_task_id(request.path_params["task_id"], "task_id")
        except p.BadParam as exc:
            return bad(request, exc)
        async with dash().measured() as cost:
            found = await dash().task(task_id)
            now = await dash().now()
        if found is None:
            return not_found(request, f"No task {task_id}.")
        actions = [a for a in TASK_ACTIONS.get(found.status, ()) if not (a == "request-cancel" and found.cancel_requested)]
        return render(request, "task.html", cost, page="tasks", t=found, now=now, actions=actions)

    async def payload(request: Request) -> Response:
        try:
            task_id = p.parse_task_id(request.path_params["task_id"], "task_id")
        except p.BadParam as exc:
            return JSONResponse({"error": str(exc), "parameter": exc.name}, status_code=400)
        which = request.path_params["which"]
        if which not in ("input", "output"):
            return JSONResponse({"error": f"no such payload {which!r} (input or output)"}, status_code=404)
        try:
            async with dash().measured() as cost:
                value = await dash().payload(task_id, which)
        except TaskNotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse({which: value}, headers={"X-Buquet-S3-Requests": str(cost.total)})

    async def schedules(request: Request) -> Response:
        async with dash().measured() as cost:
            now, rows = await dash().schedules()
        return render(request, "schedules.html", cost, page="schedules", now=now, rows=rows)

    async def workers(request: Request) -> Response:
        async with dash().measured() as cost:
            now, found = await dash().workers()
        return render(request, "workers.html", cost, page="workers", now=now, workers=found)

    # ------------------------------------------------------------- actions
    def refuse(request: Request, form: Any) -> Response | None:
        """403 unless actions are on, the form carries this server's CSRF token and
        the request is same-origin (``Origin``/``Referer`` match ``Host`` when sent)."""
        if not allow_actions:
            return Response("403 Forbidden: this dashboard is read-only (start it with --allow-actions)",
                            status_code=403, media_type="text/plain")
        host = request.headers.get("host", "")
        for header in ("origin", "referer"):
            value = request.headers.get(header)
            if value and value != "null" and urlsplit(value).netloc != host:
                return Response(f"403 Forbidden: cross-origin request ({header} {value!r})", status_code=403,
                                media_type="text/plain")
        if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
            return Response("403 Forbidden: cross-site request", status_code=403, media_type="text/plain")
        token = str(form.get("csrf", ""))
        if not hmac.compare_digest(token.encode(), csrf_token.encode()):
            return Response("403 Forbidden: missing or wrong CSRF token (reload the page)", status_code=403,
                            media_type="text/plain")
        return None

    async def task_action(request: Request) -> Response:
        form = await request.form()
        refused = refuse(request, form)
        if refused is not None:
            return refused
        verb = request.path_params["action"]
        try:
            task_id = p.parse_task_id(request.path_params["task_id"], "task_id")
        except p.BadParam as exc:
            return bad(request, exc)
        if verb not in TASK_VERBS:
            return not_found(request, f"No task action {verb!r}.")
        back = "/tasks" if verb == "delete" else f"/tasks/{task_id}"
        try:
            async with dash().measured():
                message = await dash().act_on_task(task_id, verb)
        except TaskNotFound:
            return not_found(request, f"No task {task_id}.")
        except BuquetError as exc:
            return RedirectResponse(f"/tasks/{task_id}?" + urlencode({"error": str(exc)}), status_code=303)
        return RedirectResponse(back + "?" + urlencode({"msg": message}), status_code=303)

    async def schedule_action(request: Request) -> Response:
        form = await request.form()
        refused = refuse(request, form)
        if refused is not None:
            return refused
        verb, sid = request.path_params["action"], request.path_params["schedule_id"]
        if verb not in SCHEDULE_VERBS:
            return not_found(request, f"No schedule action {verb!r}.")
        try:
            async with dash().measured():
                message = await dash().act_on_schedule(sid, verb)
        except ScheduleNotFound:
            return not_found(request, f"No schedule {sid!r}.")
        except BuquetError as exc:
            return RedirectResponse("/schedules?" + urlencode({"error": str(exc)}), status_code=303)
        return RedirectResponse("/schedules?" + urlencode({"msg": message}), status_code=303)

    routes = [
        Route("/", overview),
        Route("/tasks", tasks),
        Route("/tasks/{task_id}", task),
        Route("/tasks/{task_id}/{which:str}", payload, methods=["GET"]),
        Route("/tasks/{task_id}/{action:str}", task_action, methods=["POST"]),
        Route("/schedules", schedules),
        Route("/schedules/{schedule_id}/{action:str}", schedule_action, methods=["POST"]),
        Route("/workers", workers),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    async def store_failed(request: Request, exc: Exception) -> Response:
        log.warning("dashboard: %s %s failed: %s", request.method, request.url.path, exc)
        return render(request, "error.html", None, status_code=503, title="The store failed",
                      detail=str(exc), param=None)

    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={StorageError: store_failed})


__all__ = ["create_app"]
