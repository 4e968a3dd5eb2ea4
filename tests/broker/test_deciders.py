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
from arbiter.routing.match import health_of
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


SERVED = ("fastapi-backend", "home-assistant", "exec-automator", "lobbi-platform-manager")


def test_deciders_decide_new_texts_as_the_router_would(tmp_path):
    with broker_with(tmp_path, {"deciders": 2}) as broker, processes() as running:
        for plugin in SERVED:
            running.append(spawn_worker(broker, plugin, tmp_path / f"{plugin}.log"))  # answers UNKNOWN_COMMAND
        for plugin in SERVED:
            wait_workers(broker, plugin, 1)
        wait_until(
            lambda: status(broker.frontend)["services"].get("arbiter.decide", {}).get("workers") == 2,
            what="two deciders registered",
        )
        router = Router(build_snapshot(broker.root))
        health = health_of({}, {}, [name for name in router.snapshot.plugins if name not in SERVED])
        expected = [router.route(Request(t), health).decision.primary_plugin for t in TEXTS]
        assert expected[-1] != router.route(Request(TEXTS[-1])).decision.primary_plugin  # its lead has no worker
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


DECIDER_CREDIT = 2  # requests one decider holds at most (deciders.py)


def test_a_killed_decider_loses_no_request_and_is_replaced(tmp_path):
    """Several clients route new texts at once; one decider is stopped, so that what it holds
    stays held, and once it surely holds some (more requests wait in the deciders than the other
    one can hold) it is killed. Every request is decided and answered, and the decider replaced."""
    threads, each = 4, 40
    with broker_with(tmp_path, {"deciders": 2}) as broker, processes() as running:
        commands = ",".join(c.name for c in build_snapshot(REPO).plugins["fastapi-backend"].invocable)
        running.append(spawn_worker(broker, "fastapi-backend", tmp_path / "w.log", commands=commands, credit=50))
        wait_workers(broker, "fastapi-backend", 1)
        wait_until(
            lambda: status(broker.frontend)["services"].get("arbiter.decide", {}).get("workers") == 2,
            what="two deciders registered",
        )
        victim = _decider_processes(broker)[0].pid
        texts = [f"Add a FastAPI endpoint for orders number {index}" for index in range(threads * each)]
        results: dict[str, dict] = {}

        def load(part: list[str]) -> None:
            for text in part:
                results[text] = route(broker.frontend, text)

        clients = [threading.Thread(target=load, args=(texts[n::threads],)) for n in range(threads)]
        for client in clients:
            client.start()
        wait_until(lambda: len(results) >= 10, what="load under way")
        os.kill(victim, signal.SIGSTOP)
        try:
            deciding = lambda: status(broker.frontend)["services"]["arbiter.decide"]["inflight"]  # noqa: E731
            held = wait_until(
                lambda: (n := deciding()) > DECIDER_CREDIT and len(results) < len(texts) and n, timeout=10
            )
        finally:
            os.kill(victim, signal.SIGKILL)
        answered_when_killed = len(results)
        print(f"killed holding: {held} in the deciders, {answered_when_killed} of {len(texts)} answered")
        for client in clients:
            client.join(120)
        assert held, f"the stopped decider was never seen holding a request ({answered_when_killed} answered)"
        assert answered_when_killed < len(texts)
        assert len(results) == len(texts)
        for text, reply in results.items():
            assert reply["payload"]["status"] == "success", (text, reply["payload"])
            assert reply["payload"]["result"]["decision"]["routingDecision"]["primaryPlugin"] == "fastapi-backend"
        wait_until(
            lambda: status(broker.frontend)["deciders"] == {"processes": 2, "running": 2, "restarts": 1},
            what="the dead decider replaced",
        )
        assert victim not in [p.pid for p in _decider_processes(broker)]


def test_with_no_deciders_the_loop_decides(tmp_path):
    with broker_with(tmp_path, {"deciders": 0}) as broker, processes() as running:
        running.append(spawn_worker(broker, "fastapi-backend", tmp_path / "w.log"))  # answers UNKNOWN_COMMAND
        wait_workers(broker, "fastapi-backend", 1)
        assert primaries(broker.frontend, TEXTS[:1]) == ["fastapi-backend"]
        now = status(broker.frontend)
        assert "arbiter.decide" not in now["services"] and now["deciders"]["processes"] == 0


def test_a_reload_reaches_the_deciders(tmp_path):
    with broker_with(tmp_path, {"deciders": 1, "reload": {"watch": False}}) as broker, processes() as running:
        running.append(spawn_worker(broker, "exec-automator", tmp_path / "exec.log"))  # the rule requires it
        wait_workers(broker, "exec-automator", 1)
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
    body = request_body(decider.router.snapshot.fingerprint, "req_1", route, {}, {}, [])
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
    stale = decider.decide(request_body("not-this-snapshot", "req_2", route, {}, {}, []))
    assert [orjson.loads(frame) for frame in stale] == [{"stale": decider.router.snapshot.fingerprint}]
