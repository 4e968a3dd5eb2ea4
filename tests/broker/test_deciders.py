"""Decisions off the loop: decider processes the broker starts make the routing decisions of new
texts, as workers of an internal service nobody else may serve; one that dies loses no request;
a hot reload reaches them; with none, the loop decides. Real broker, decider and worker processes."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import orjson
import pytest
import zmq
from broker_helpers import broker_with, dealer, recv, status, wait_until
from test_faults import processes, spawn_worker, wait_workers

from arbiter.project.snapshot import build_snapshot
from arbiter.routing.pipeline import Request, Router
from arbiter.sdk.client import Client
from arbiter.wire import envelope as env
from arbiter.wire.mdp import DISCONNECT, MDPW01, READY

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TEXTS = [
    "Build a FastAPI endpoint for orders with MongoDB and Keycloak auth for tenant acme-corp",
    "write a Home Assistant automation for the porch lights at sunset",
    "analyze this RFP and list every obligation and deadline",
    "set up single sign-on with OIDC for our React app",
    "deploy the api to kubernetes with helm",
]


def route(frontend: str, text: str, timeout: float = 20) -> dict:
    """The reply to routing ``text``; its expiry keeps a plan whose plugins have no worker (retried
    with backoff, then their fallbacks) from outlasting the client: the answer then carries the
    decision all the same."""
    request = env.new_request("arbiter.route", "work", timeout_ms=3000)
    request["payload"] = {"text": text}
    with Client(frontend, timeout=timeout, retries=0) as client:
        return client.request("arbiter.route", request).envelope


def primaries(frontend: str, texts: list[str]) -> list[str | None]:
    out = []
    for text in texts:
        reply = route(frontend, text)
        payload = reply["payload"]
        decision = (payload.get("result") or {}).get("decision") or payload["error"]["decision"]
        out.append(decision["routingDecision"]["primaryPlugin"])
    return out


def test_deciders_decide_new_texts_as_the_router_would(tmp_path):
    with broker_with(tmp_path, {"deciders": 2}) as broker, processes() as running:
        for plugin in ("fastapi-backend", "home-assistant", "exec-automator", "lobbi-platform-manager"):
            running.append(spawn_worker(broker, plugin, tmp_path / f"{plugin}.log"))  # answers UNKNOWN_COMMAND
        wait_until(
            lambda: status(broker.frontend)["services"].get("arbiter.decide", {}).get("workers") == 2,
            what="two deciders registered",
        )
        router = Router(build_snapshot(broker.root))
        expected = [router.route(Request(t)).decision.primary_plugin for t in TEXTS]
        assert primaries(broker.frontend, TEXTS) == expected
        now = status(broker.frontend)
        assert now["services"]["arbiter.decide"]["requests"] >= len(TEXTS)
        assert now["deciders"] == {"processes": 2, "running": 2, "restarts": 0}
        assert "arbiter.decide." not in json.dumps(now)  # the internal name's secret is never shown


def test_no_one_else_may_serve_the_deciders_service(tmp_path):
    with broker_with(tmp_path, {"deciders": 1}) as broker:
        sock = dealer(zmq.Context.instance(), broker.frontend)
        try:
            sock.send_multipart([b"", MDPW01, READY, b"arbiter.decide"])
            assert recv(sock)[:3] == [b"", MDPW01, DISCONNECT]
        finally:
            sock.close()
        assert status(broker.frontend)["counters"]["dropped"]["reserved-service"] == 1


def test_a_killed_decider_loses_no_request_and_is_replaced(tmp_path):
    with broker_with(tmp_path, {"deciders": 2}) as broker, processes() as running:
        commands = ",".join(c.name for c in build_snapshot(REPO).plugins["fastapi-backend"].invocable)
        running.append(spawn_worker(broker, "fastapi-backend", tmp_path / "w.log", commands=commands, credit=50))
        wait_workers(broker, "fastapi-backend", 1)
        wait_until(lambda: status(broker.frontend)["deciders"]["running"] == 2, what="two deciders running")
        pids = [p.pid for p in _decider_processes(broker)]
        results: list[dict] = []

        def load() -> None:
            for index in range(120):
                results.append(route(broker.frontend, f"Add a FastAPI endpoint for orders number {index}"))

        thread = threading.Thread(target=load)
        thread.start()
        wait_until(lambda: len(results) >= 20, what="load under way")
        os.kill(pids[0], signal.SIGKILL)
        thread.join(120)
        assert len(results) == 120 and all(r["payload"]["status"] == "success" for r in results)
        wait_until(
            lambda: status(broker.frontend)["deciders"] == {"processes": 2, "running": 2, "restarts": 1},
            what="the dead decider replaced",
        )


def test_with_no_deciders_the_loop_decides(tmp_path):
    with broker_with(tmp_path, {"deciders": 0}) as broker, processes() as running:
        running.append(spawn_worker(broker, "fastapi-backend", tmp_path / "w.log"))  # answers UNKNOWN_COMMAND
        wait_workers(broker, "fastapi-backend", 1)
        assert primaries(broker.frontend, TEXTS[:1]) == ["fastapi-backend"]
        now = status(broker.frontend)
        assert "arbiter.decide" not in now["services"] and now["deciders"]["processes"] == 0


def test_a_reload_reaches_the_deciders(tmp_path):
    with broker_with(tmp_path, {"deciders": 1, "reload": {"watch": False}}) as broker:
        text = "please frobnicate the quux for the porch lights"
        before = primaries(broker.frontend, [text])[0]
        rule = (
            "rule frobnicate-goes-to-exec {\n  priority 99\n  when text matches /frobnicate/i\n"
            '  then require exec-automator\n  because "frobnication is paperwork"\n}\n'
        )
        (broker.root / "rules" / "zz-frobnicate.arb").write_text(rule)
        fingerprint = status(broker.frontend)["snapshot"]["fingerprint"]
        broker.process.send_signal(signal.SIGHUP)
        wait_until(lambda: status(broker.frontend)["snapshot"]["fingerprint"] != fingerprint, what="the reload")
        after = primaries(broker.frontend, [text + " again"])[0]
        assert before != "exec-automator" and after == "exec-automator"


def _decider_processes(broker) -> list:
    """The broker's decider children, found through /proc (their command line names the module)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().split(") ")[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == broker.process.pid and b"arbiter.broker.deciders" in cmdline:
            found.append(type("P", (), {"pid": int(entry.name)}))
    return found


def test_decider_request_and_reply_shapes():
    """What travels between broker and decider (for anyone writing a decider elsewhere)."""
    from arbiter.broker.deciders import Decider, request_body
    from arbiter.broker.decision_cache import Decided
    from arbiter.broker.messages import RouteInput

    route = RouteInput({}, TEXTS[0], (), None, None, {})
    decider = Decider(build_snapshot(REPO).project)
    body = request_body(decider.router.snapshot.fingerprint, "req_1", route, {}, {})
    frames = decider.decide(body)
    decided = Decided.from_wire(frames)
    assert (decided.primary, decided.row.request_id) == ("fastapi-backend", "req_1")
    assert (
        orjson.loads(orjson.dumps(decided.json_for("req_9")))["routingDecision"]["primaryPlugin"] == "fastapi-backend"
    )
    expected = Decided.of(Router(build_snapshot(REPO)).route(Request(TEXTS[0], request_id="req_1")).to_json(False))
    assert (decided.plan, decided.collaborators, decided.user_input) == (
        expected.plan,
        expected.collaborators,
        TEXTS[0],
    )
    stale = decider.decide(request_body("not-this-snapshot", "req_2", route, {}, {}))
    assert [orjson.loads(frame) for frame in stale] == [{"stale": decider.router.snapshot.fingerprint}]
