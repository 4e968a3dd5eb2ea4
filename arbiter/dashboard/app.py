"""The dashboard's ASGI app (starlette): the page, its assets, JSON endpoints over the broker's
services and the project's store, and one server-sent event stream with everything live.

Endpoints (docs/DASHBOARD.md has the details):

    GET  /                                  the page
    GET  /static/...                        its script and style
    GET  /api/overview                      status, time series, recent events
    GET  /api/decisions?last=N              recorded decisions, newest first
    GET  /api/decisions/{requestId}         one recorded decision and its explanation
    GET  /api/chains                        every chain's plan as a graph
    GET  /api/runs?last=N                   recent chain runs with their steps
    GET  /api/dead-letters?last=N           dead letters, newest failure first
    POST /api/dead-letters/{id}/replay      send a letter again through the broker
    GET  /api/events                        text/event-stream: status, decision, chain, circuit, ...

With a token, every request carries it (``Authorization: Bearer T``, ``X-Arbiter-Token: T`` or
``?token=T``); the page passes on the one in its own address."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable
from urllib.parse import quote

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from arbiter.dashboard import views
from arbiter.dashboard.hub import Hub
from arbiter.dashboard.link import BrokerLink
from arbiter.project.snapshot import Snapshot
from arbiter.sdk.client import ClientError
from arbiter.store import database
from arbiter.store import dead_letters as letters
from arbiter.store import decisions as recorded
from arbiter.store import runs as stored_runs
from arbiter.store.replay import replay_outcome
from arbiter.wire import envelope as env

STATIC = Path(__file__).parent / "static"
KEEPALIVE_S = 15.0
MAX_LAST = 500


class JSON(JSONResponse):
    """orjson: fast, and safe with the store's values (anything unknown becomes its text)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str)


@dataclass
class Dashboard:
    """What the routes share: the link to the broker, the hub, the project, the token."""

    hub: Hub
    link: BrokerLink
    snapshot: Snapshot
    token: str | None = None
    closing: asyncio.Event = field(default_factory=asyncio.Event)


def _last(request: Request, default: int = 50) -> int:
    try:
        return max(1, min(MAX_LAST, int(request.query_params.get("last", default))))
    except ValueError:
        return default


def _store_failure(exc: Exception) -> JSON:
    """A store that cannot be read is answered 503 with its one line; anything else is a bug."""
    failure = database.store_failure(exc)
    if failure is None:
        raise exc
    return JSON({"error": str(failure)}, status_code=503)


def token_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-arbiter-token") or request.query_params.get("token")


class TokenCheck:
    """Every HTTP request carries the token (when one is set), compared in constant time. Plain
    ASGI, so the event stream passes through unbuffered."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = token_of(Request(scope))
            if not (given and hmac.compare_digest(given.encode(), self.token)):
                refusal = JSON({"error": "a token is required: ?token=T or Authorization: Bearer T"}, status_code=401)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def page(dash: Dashboard) -> Callable[[Request], Response]:
    template = (STATIC / "index.html").read_text(encoding="utf-8")

    def index(request: Request) -> Response:
        query = f"?token={quote(dash.token, safe='')}" if dash.token else ""
        return HTMLResponse(template.replace("__QUERY__", html.escape(query)))

    return index


def overview(dash: Dashboard) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        return JSON(dash.hub.snapshot())

    return handler


def decision_list(request: Request) -> Response:
    try:
        rows = recorded.recent_decisions(_last(request))
    except Exception as exc:
        return _store_failure(exc)
    return JSON([views.decision_row(row) for row in rows])


def decision_detail(dash: Dashboard) -> Callable[[Request], Response]:
    """The recorded decision (facts with evidence, scores, plan, dispatch steps) and, from
    ``arbiter.explain`` on the same text, the rules that fire for it now, with file:line."""

    def handler(request: Request) -> Response:
        request_id = request.path_params["request_id"]
        try:
            found = recorded.find_decision(request_id)
        except Exception as exc:
            return _store_failure(exc)
        if found is None:
            return JSON({"error": f"no recorded decision for request '{request_id}' (yet)"}, status_code=404)
        explained, problem = explain_now(dash.link, found)
        explained = views.short_rule_sources(explained, str(Path(dash.snapshot.project.root).resolve()))
        return JSON({"recorded": found, "explained": explained, "explainError": problem})

    return handler


def explain_now(link: BrokerLink, decision: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    request = env.new_request("arbiter.explain", "explain", source="arbiter-dashboard")
    request["payload"] = {"text": decision.get("userInput") or ""}
    try:
        with link.client(timeout=3.0) as client:
            reply = client.request("arbiter.explain", request)
    except ClientError as exc:
        return None, str(exc)
    if not reply.ok:
        return None, str((reply.error or {}).get("message") or reply.error)
    return reply.result, None


def chain_list(dash: Dashboard) -> Callable[[Request], Response]:
    root = str(Path(dash.snapshot.project.root).resolve())
    graphs = [views.chain_graph(plan, root) for plan in dash.snapshot.rules.chains.values()]

    def handler(request: Request) -> Response:
        return JSON(graphs)

    return handler


def run_list(request: Request) -> Response:
    try:
        rows = [stored_runs.get(run["id"]) for run in stored_runs.recent(_last(request, 20))]
    except Exception as exc:
        return _store_failure(exc)
    return JSON([views.run_row(run) for run in rows])


def letter_list(request: Request) -> Response:
    try:
        return JSON(letters.list_letters(_last(request)))
    except Exception as exc:
        return _store_failure(exc)


def letter_replay(dash: Dashboard) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        letter_id = request.path_params["letter_id"]
        try:
            with dash.link.client(timeout=5.0, retries=1) as client:
                outcome = replay_outcome(client, letter_id, (ClientError,))
        except Exception as exc:
            return _store_failure(exc)
        return JSON(outcome, status_code=200 if outcome["ok"] or "reply" in outcome else 502)

    return handler


def sse(message_id: int | None, kind: str, data: Any) -> str:
    head = f"id: {message_id}\n" if message_id is not None else ""
    return f"{head}event: {kind}\ndata: {orjson.dumps(data, default=str).decode()}\n\n"


def event_stream(dash: Dashboard) -> Callable[[Request], Any]:
    async def handler(request: Request) -> Response:
        stream = dash.hub.open_stream(asyncio.get_running_loop())

        async def body() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                yield sse(None, "hello", dash.hub.snapshot())
                idle = 0.0
                while not dash.closing.is_set():
                    try:
                        message = await asyncio.wait_for(stream.queue.get(), 1.0)
                    except asyncio.TimeoutError:
                        idle += 1.0
                        if idle >= KEEPALIVE_S:
                            idle = 0.0
                            yield ": keepalive\n\n"
                        continue
                    idle = 0.0
                    if stream.overflowed:
                        stream.drain()
                        yield sse(None, "resync", {})
                        continue
                    yield sse(message["id"], message["kind"], message["data"])
            finally:
                dash.hub.close_stream(stream)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    return handler


def create_app(dash: Dashboard) -> Starlette:
    """The app; its lifespan starts the broker link and stops it (and the streams) at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dash.link.start()
        try:
            yield
        finally:
            dash.closing.set()
            await asyncio.get_running_loop().run_in_executor(None, dash.link.stop)

    routes = [
        Route("/", page(dash)),
        Route("/api/overview", overview(dash)),
        Route("/api/decisions", decision_list),
        Route("/api/decisions/{request_id:str}", decision_detail(dash)),
        Route("/api/chains", chain_list(dash)),
        Route("/api/runs", run_list),
        Route("/api/dead-letters", letter_list),
        Route("/api/dead-letters/{letter_id:str}/replay", letter_replay(dash), methods=["POST"]),
        Route("/api/events", event_stream(dash)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TokenCheck, token=dash.token)] if dash.token else []
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
