"""Security on the bus, with real processes: CURVE on the broker's sockets, ZAP refusing unknown
keys, and the permissions of configs/security.yaml applied to every message."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
import zmq
import zmq.auth
from broker_helpers import broker_with, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_envelope_fuzz import FIELDS, json_values, replace
from zmq.utils.monitor import recv_monitor_message

from arbiter.sdk.client import Client, RequestTimeout
from arbiter.sdk.curve import BROKER_KEY_ENV, KEY_ENV, CurveKeys
from arbiter.sdk.state import SharedState, StateError
from arbiter.sdk.worker import Worker
from arbiter.wire import envelope as env
from arbiter.wire.mdp import MDPC01, MDPW01, READY

PEERS = ("broker", "billing-worker", "web-client", "admin", "stranger", "idle-worker")
SECURITY = """
curve:
  secret_key_file: keys/broker.key_secret
identities:
  billing-worker:
    public_key_file: keys/billing-worker.key
    serve: {allow: [fastapi-backend]}
    publish: {allow: ["plugin/billing/**"]}
  idle-worker:
    public_key_file: keys/idle-worker.key
    serve: {allow: [exec-automator]}
  web-client:
    public_key_file: keys/web-client.key
    call: {allow: [fastapi-backend, arbiter.state, mmi.*]}
    subscribe: {allow: ["plugin/billing/**"], deny: ["plugin/billing/secret/**"]}
  admin:
    public_key_file: keys/admin.key
    call: {allow: ["**"]}
    subscribe: {allow: ["**"]}
"""
SECRET_TEXT = "invoice 7731 for ACME, total 4,200.00"


def _project(root: Path) -> None:
    keys = root / "keys"
    keys.mkdir()
    for name in PEERS:
        zmq.auth.create_certificates(keys, name)
    (root / "configs" / "security.yaml").write_text(SECURITY)


@contextlib.contextmanager
def secure_broker(tmp: Path, overrides: dict[str, Any] | None = None) -> Iterator[Any]:
    """A broker with security on. The harness's own probes (is it up? its status) are SDK
    clients, which take their keys from the environment: the admin's, for as long as it runs."""

    def project(root: Path) -> None:
        _project(root)
        os.environ[KEY_ENV] = str(root / "keys" / "admin.key_secret")
        os.environ[BROKER_KEY_ENV] = str(root / "keys" / "broker.key")

    try:
        with broker_with(tmp, overrides, project=project) as started:
            yield started
    finally:
        os.environ.pop(KEY_ENV, None)
        os.environ.pop(BROKER_KEY_ENV, None)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with secure_broker(tmp_path_factory.mktemp("secure")) as started:
        yield started


def keys(broker: Any, name: str) -> CurveKeys:
    root = broker.root / "keys"
    return CurveKeys.from_files(root / f"{name}.key_secret", root / "broker.key")


@contextlib.contextmanager
def keyless() -> Iterator[None]:
    """Nothing from the environment either: a peer that has no key at all."""
    saved = {k: os.environ.pop(k) for k in (KEY_ENV, BROKER_KEY_ENV) if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def client(broker: Any, name: str | None, endpoint: str | None = None, timeout: float = 5) -> Client:
    if name is None:
        with keyless():
            return Client(endpoint or broker.frontend, timeout=timeout, retries=0, source="anonymous")
    curve = keys(broker, name)
    return Client(endpoint or broker.frontend, timeout=timeout, retries=0, source=name, curve=curve)


def status(broker: Any) -> dict[str, Any]:
    with client(broker, "admin") as admin:
        return admin.request("arbiter.status", env.new_request("arbiter.status", "")).result


def serving(broker: Any, name: str, service: str, seen: list[dict]) -> Worker:
    with keyless():
        worker = Worker(broker.frontend, service, heartbeat_interval=0.5, curve=keys(broker, name) if name else None)

    @worker.command("scaffold-endpoint")
    def scaffold(parameters: dict, envelope: dict) -> dict:
        seen.append(envelope)
        return {"by": name}

    worker.raw(lambda frames: [b"raw:" + frames[0]])
    worker.start()
    return worker


def refusals(broker: Any) -> tuple[int, int]:
    """The broker's counts of refused handshakes and of refused READYs so far."""
    security = status(broker)["security"]
    return security["refusedHandshakes"], security.get("forbidden-serve", 0)


HANDSHAKE_OUTCOMES = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


@contextlib.contextmanager
def keyless_ready(broker: Any, service: str) -> Iterator[zmq.Socket]:
    """A peer without keys that says READY for ``service``, handed over once its handshake has
    failed. Its own socket tells: a peer offering no keys never reaches the broker's ZAP handler,
    so the broker counts nothing for it."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket(HANDSHAKE_OUTCOMES)
    try:
        sock.connect(broker.frontend)
        sock.send_multipart([b"", MDPW01, READY, service.encode()])
        assert monitor.poll(20_000), "the keyless peer's handshake never ended"
        outcome = recv_monitor_message(monitor)["event"]
        assert outcome != zmq.EVENT_HANDSHAKE_SUCCEEDED, "a peer without keys completed a handshake"
        yield sock
    finally:
        sock.disable_monitor()
        monitor.close()
        sock.close()


def test_only_a_permitted_worker_gets_requests(broker: Any) -> None:
    stolen: list[dict] = []
    served: list[dict] = []
    handshakes, readies = refusals(broker)
    with keyless_ready(broker, "fastapi-backend") as keyless:
        thieves = [serving(broker, name, "fastapi-backend", stolen) for name in ("stranger", "idle-worker")]
        try:
            # each thief has had its go before the permitted worker comes
            wait_until(lambda: refusals(broker)[0] > handshakes, what="the stranger's handshake was refused")
            wait_until(lambda: refusals(broker)[1] > readies, what="the idle worker's READY was refused")
            good = serving(broker, "billing-worker", "fastapi-backend", served)
            try:
                with client(broker, "web-client", timeout=10) as web:
                    wait_until(lambda: web.mmi("fastapi-backend") == "200", what="the permitted worker registered")
                    replies = [web.call("fastapi-backend", "scaffold-endpoint", {"n": n}) for n in range(10)]
            finally:
                good.stop(timeout=5)
        finally:
            for thief in thieves:
                thief.stop(timeout=5)
        # a worker whose key the broker refused still stops: its sends never wait for a connection
        assert [thief._thread.is_alive() for thief in thieves] == [False, False]  # type: ignore[union-attr]
        assert not keyless.poll(0)  # no request reached the keyless peer either
    assert all(r.ok and r.result == {"by": "billing-worker"} for r in replies)
    assert len(served) == 10 and stolen == []
    security = status(broker)["security"]
    assert security["enabled"] and security["forbidden-serve"] >= 1 and security["refusedHandshakes"] >= 1


def announced_until_heard(broker: Any, watcher: zmq.Socket, timeout: float = 10.0) -> None:
    """Make calls the broker refuses, each announced on ``system/security``, until ``watcher``
    hears one: its subscription has reached the broker."""
    deadline = time.monotonic() + timeout
    with client(broker, "web-client") as web:
        while time.monotonic() < deadline:
            web.request("arbiter.status", env.new_request("arbiter.status", ""))  # FORBIDDEN, announced
            if watcher.poll(100):
                return
    raise AssertionError(f"the subscription to system/security did not reach the broker in {timeout:g}s")


def test_a_client_without_a_known_key_gets_nothing(broker: Any) -> None:
    ctx = zmq.Context.instance()
    watcher = ctx.socket(zmq.SUB)
    watcher.setsockopt(zmq.LINGER, 0)
    keys(broker, "admin").apply(watcher)
    watcher.setsockopt(zmq.SUBSCRIBE, b"system/security")
    watcher.connect(broker.events_sub)
    try:
        announced_until_heard(broker, watcher)
        for name in (None, "stranger"):
            with client(broker, name, timeout=1.5) as outsider:
                with pytest.raises(RequestTimeout):
                    outsider.request("arbiter.status", env.new_request("arbiter.status", ""))
        stranger = keys(broker, "stranger").public.decode()
        seen = []
        while watcher.poll(5000) and stranger not in seen:
            seen.append(orjson.loads(watcher.recv_multipart()[1])["payload"].get("publicKey"))
        assert stranger in seen  # the refusal is announced, with the public key only
    finally:
        watcher.close()


def test_a_call_the_identity_may_not_make_is_forbidden(broker: Any) -> None:
    with client(broker, "web-client") as web:
        reply = web.request("arbiter.status", env.new_request("arbiter.status", ""))
    assert not reply.ok and reply.error["code"] == "FORBIDDEN" and "web-client" in reply.error["message"]


def test_shared_state_acts_for_the_proven_identity_not_the_claimed_one(broker: Any) -> None:
    web = SharedState(client(broker, "web-client"))
    web.client.source = "admin"  # a claim the key does not back
    entry = web.put("global", "owned", 1, access="protected")
    assert entry["owner"] == "web-client"
    admin = SharedState(client(broker, "admin"))
    with pytest.raises(StateError) as refused:
        admin.put("global", "owned", 2)
    assert refused.value.code == "FORBIDDEN"


def test_routing_works_with_the_brokers_own_helpers_behind_curve(broker: Any) -> None:
    with client(broker, "admin", timeout=15) as admin:
        request = env.new_request("arbiter.explain", "")
        request["payload"] = {"text": "add a Beanie model and CRUD endpoints for invoices"}
        wait_until(lambda: status(broker)["deciders"]["running"] >= 1, what="a decider")
        explained = admin.request("arbiter.explain", request)
    routing = explained.result["routingDecision"]
    assert explained.ok and routing["primaryPlugin"] is None and routing["unservedPlugins"] == ["fastapi-backend"]


class Tap:
    """A TCP relay on loopback that keeps every byte it passes, both ways."""

    def __init__(self, target: str):
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self.target = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self.server.getsockname()[1]}"
        self.seen = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        inbound, _ = self.server.accept()
        outbound = socket.create_connection(self.target)
        for a, b in ((inbound, outbound), (outbound, inbound)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while data := source.recv(65536):
            with self.lock:
                self.seen += data
            sink.sendall(data)


def test_the_bytes_on_the_wire_are_not_the_request(broker: Any) -> None:
    served: list[dict] = []
    worker = serving(broker, "billing-worker", "fastapi-backend", served)
    tap = Tap(broker.frontend)
    try:
        with client(broker, "web-client", endpoint=tap.endpoint, timeout=10) as web:
            wait_until(lambda: web.mmi("fastapi-backend") == "200", what="the worker registered")
            reply = web.call("fastapi-backend", "scaffold-endpoint", {"note": SECRET_TEXT})
    finally:
        worker.stop(timeout=5)
    assert reply.ok and served[-1]["payload"]["parameters"]["note"] == SECRET_TEXT
    with tap.lock:
        seen = bytes(tap.seen)
    assert len(seen) > 200 and SECRET_TEXT.encode() not in seen and b"scaffold-endpoint" not in seen


def test_a_reload_that_revokes_a_permission_takes_effect_on_the_next_message(tmp_path: Path) -> None:
    with secure_broker(tmp_path) as own:
        with client(own, "web-client") as web:
            assert web.mmi("fastapi-backend") in ("200", "404")  # mmi.* is allowed
            revoked = SECURITY.replace("call: {allow: [fastapi-backend, arbiter.state, mmi.*]}", "call: {allow: []}")
            (own.root / "configs" / "security.yaml").write_text(revoked)
            own.process.send_signal(signal.SIGHUP)

            def refused() -> bool:
                reply = web.request("mmi.service", b"fastapi-backend")
                return not reply.ok and reply.error["code"] == "FORBIDDEN"

            wait_until(refused, what="the revoked permission refused")


def test_a_key_file_replaced_alone_is_served_by_the_watcher(tmp_path: Path) -> None:
    """Key files are inputs: a new key pair for an identity, written over the old files, is taken
    without a save of security.yaml or a SIGHUP; the old key is refused from then on."""
    with secure_broker(tmp_path, {"reload": {"watch": True, "debounce_ms": 50}}) as own:
        before = status(own)["snapshot"]["fingerprint"]
        old = keys(own, "web-client")
        with client(own, "web-client") as web:
            assert web.mmi("fastapi-backend") in ("200", "404")
        aside = tmp_path / "new-keys"
        aside.mkdir()
        zmq.auth.create_certificates(aside, "web-client")
        for name in ("web-client.key", "web-client.key_secret"):
            os.replace(aside / name, own.root / "keys" / name)
        wait_until(lambda: status(own)["snapshot"]["fingerprint"] != before, what="the key file change was served")
        with client(own, "web-client") as web:
            assert web.mmi("fastapi-backend") in ("200", "404")  # the new key is known
        with Client(own.frontend, timeout=2, retries=0, source="web-client", curve=old) as stale:
            with pytest.raises(RequestTimeout):
                stale.mmi("fastapi-backend")  # the old one is refused at the handshake


@pytest.mark.parametrize(
    "endpoints,local",
    [
        (("tcp://127.0.0.1:5555", "ipc:///tmp/x", "tcp://[::1]:1", "tcp://localhost:2"), True),
        (("tcp://0.0.0.0:5555",), False),
        (("tcp://*:5555",), False),
        (("tcp://10.1.2.3:5555",), False),
        (("tcp://eth0:5555",), False),
    ],
)
def test_only_loopback_is_served_in_the_clear_unless_told(endpoints: tuple[str, ...], local: bool) -> None:
    from arbiter.broker.guard import InsecureBind, check_bind, loopback_only
    from arbiter.security.config import DISABLED

    assert loopback_only(*endpoints) is local
    if local:
        check_bind(DISABLED, False, *endpoints)
    else:
        with pytest.raises(InsecureBind, match="--insecure"):
            check_bind(DISABLED, False, *endpoints)
        check_bind(DISABLED, True, *endpoints)  # told: served, with a warning


def test_the_daemon_refuses_a_public_address_in_the_clear(tmp_path: Path) -> None:
    import subprocess
    import sys

    from test_sdk_harness import REPO, make_project

    root = make_project(tmp_path, "tcp://0.0.0.0:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    done = subprocess.run(
        [sys.executable, str(REPO / "broker.py"), "--root", str(root)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "--insecure" in done.stderr


def test_a_publisher_publishes_only_where_its_identity_may(broker: Any) -> None:
    ctx = zmq.Context.instance()
    sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
    try:
        for sock, name, endpoint in ((sub, "admin", broker.events_sub), (pub, "billing-worker", broker.events_pub)):
            sock.setsockopt(zmq.LINGER, 0)
            keys(broker, name).apply(sock)
            sock.connect(endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        seen: list[bytes] = []
        deadline = time.monotonic() + 20
        while b"plugin/billing/events" not in seen and time.monotonic() < deadline:  # the slow joiner
            for topic in (b"orchestration/forged", b"plugin/billing/events"):
                pub.send_multipart([topic, env.encode({"messageType": "event", "topic": topic.decode()})])
            while sub.poll(100):
                seen.append(sub.recv_multipart()[0])
        assert b"plugin/billing/events" in seen and b"orchestration/forged" not in seen
    finally:
        sub.close()
        pub.close()
    assert status(broker)["events"]["forbiddenPublications"] >= 1


def test_a_subscriber_receives_only_what_its_identity_may_read(broker: Any) -> None:
    """web-client may read plugin/billing/** but not plugin/billing/secret/**: its subscription to
    plugin/billing/invoice is applied; plugin/billing/ (which would deliver the secret topics) and
    an identity without subscribe rules are refused, counted and announced, and get nothing."""
    ctx = zmq.Context.instance()
    refused_before = status(broker)["security"].get("forbidden-subscribe", 0)
    wanted = [("web-client", b"plugin/billing/invoice"), ("web-client", b"plugin/billing/"), ("idle-worker", b"")]
    subs = []
    pub = ctx.socket(zmq.PUB)
    try:
        for name, topic in wanted:
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            keys(broker, name).apply(sub)
            sub.connect(broker.events_sub)
            sub.setsockopt(zmq.SUBSCRIBE, topic)
            subs.append(sub)
        pub.setsockopt(zmq.LINGER, 0)
        keys(broker, "billing-worker").apply(pub)
        pub.connect(broker.events_pub)
        wait_until(
            lambda: status(broker)["security"].get("forbidden-subscribe", 0) >= refused_before + 2,
            what="both wide subscriptions refused",
        )
        heard: list[list[bytes]] = [[] for _ in subs]
        deadline = time.monotonic() + 20
        while not heard[0] and time.monotonic() < deadline:  # the slow joiner
            for topic in (b"plugin/billing/invoice", b"plugin/billing/secret/salaries"):
                pub.send_multipart([topic, env.encode({"messageType": "event", "topic": topic.decode()})])
            for sub, got in zip(subs, heard):
                while sub.poll(50):
                    got.append(sub.recv_multipart()[0])
        for _ in range(5):  # a few more rounds, now that the granted subscriber hears
            pub.send_multipart([b"plugin/billing/secret/salaries", b"{}"])
        for sub, got in zip(subs, heard):
            while sub.poll(200):
                got.append(sub.recv_multipart()[0])
    finally:
        pub.close()
        for sub in subs:
            sub.close()
    assert set(heard[0]) == {b"plugin/billing/invoice"}, heard[0]
    assert heard[1] == [] and heard[2] == [], heard


def test_a_reload_that_revokes_a_subscription_stops_its_events(tmp_path: Path) -> None:
    """A subscription is judged when it is made; a reload that changes the rules has every
    subscriber subscribe again, so a revoked one stops receiving and a permitted one goes on."""
    ctx = zmq.Context.instance()
    with secure_broker(tmp_path) as own:
        socks = {name: ctx.socket(zmq.SUB) for name in ("web-client", "admin")}
        pub = ctx.socket(zmq.PUB)
        try:
            for name, sub in socks.items():
                sub.setsockopt(zmq.LINGER, 0)
                keys(own, name).apply(sub)
                sub.connect(own.events_sub)
                sub.setsockopt(zmq.SUBSCRIBE, b"plugin/billing/invoice")
            pub.setsockopt(zmq.LINGER, 0)
            keys(own, "billing-worker").apply(pub)
            pub.connect(own.events_pub)

            def heard() -> dict[str, int]:
                pub.send_multipart([b"plugin/billing/invoice", b"{}"])
                got = {}
                for name, sub in socks.items():
                    got[name] = 0
                    while sub.poll(50):
                        sub.recv_multipart()
                        got[name] += 1
                return got

            wait_until(lambda: all(heard().values()), what="both subscribers hear the invoice")
            revoked = SECURITY.replace(
                'subscribe: {allow: ["plugin/billing/**"], deny: ["plugin/billing/secret/**"]}', "subscribe: {}"
            )
            assert revoked != SECURITY
            before = status(own)["snapshot"]["fingerprint"]
            (own.root / "configs" / "security.yaml").write_text(revoked)
            own.process.send_signal(signal.SIGHUP)
            wait_until(lambda: status(own)["snapshot"]["fingerprint"] != before, what="the reload")
            wait_until(lambda: heard()["admin"] > 0, what="the permitted subscriber hears again")
            later = [heard() for _ in range(10)]
        finally:
            pub.close()
            for sub in socks.values():
                sub.close()
    assert sum(round_["admin"] for round_ in later) >= 5
    assert sum(round_["web-client"] for round_ in later) == 0, later


def test_malformed_messages_from_a_known_peer_are_dropped_and_counted_as_without_security(broker: Any) -> None:
    from test_mdp_conformance import MALFORMED

    def dropped() -> dict[str, int]:
        return status(broker)["counters"]["dropped"]

    before = dropped()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    keys(broker, "admin").apply(sock)
    sock.connect(broker.frontend)
    try:
        for frames in MALFORMED.values():
            sock.send_multipart(frames)
        wait_until(
            lambda: all(dropped().get(reason, 0) > before.get(reason, 0) for reason in MALFORMED),
            what="every malformed message counted",
        )
    finally:
        sock.close()
    with client(broker, "admin") as admin:
        assert admin.mmi("mmi.service") in ("200", "404")  # still serving


SECURE_TARGETS = {
    "arbiter.status": {},
    "arbiter.explain": {"text": "add a Beanie model and CRUD endpoints for invoices"},
    "arbiter.route": {"text": "add a Beanie model and CRUD endpoints for invoices", "collaborate": False},
    "arbiter.state": {"op": "put", "scope": "session:fuzz", "key": "k", "value": 1, "access": "public"},
    "fastapi-backend": {"command": "scaffold-endpoint", "parameters": {"n": 1}},
}  # a service nobody serves is left out: a request the broker cannot read waits its default 30 s


@pytest.fixture(scope="module")
def served(broker: Any) -> Iterator[list[dict]]:
    """The permitted worker of fastapi-backend, for the fuzz below."""
    seen: list[dict] = []
    worker = serving(broker, "billing-worker", "fastapi-backend", seen)
    with client(broker, "admin", timeout=10) as admin:
        wait_until(lambda: admin.mmi("fastapi-backend") == "200", what="the permitted worker registered")
    yield seen
    worker.stop(timeout=5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    peer=st.sampled_from(["admin", "web-client"]),
    target=st.sampled_from(sorted(SECURE_TARGETS)),
    field=st.sampled_from(FIELDS),
    value=json_values,
)
def test_with_security_on_one_bad_field_costs_one_request_at_most(
    broker: Any, served: list[dict], peer: str, target: str, field: str, value: Any
) -> None:
    """The envelope fuzz, sent by known peers (one allowed everything, one allowed a few
    services) through CURVE: every message gets one answer (the service's, BAD_ENVELOPE,
    BAD_REQUEST, FORBIDDEN, EXPIRED, ...), never INTERNAL_ERROR, and the broker is left as it was."""
    request = env.new_request(target, "work", timeout_ms=1500)
    request["payload"] = dict(SECURE_TARGETS[target])
    body = orjson.dumps(replace(request, field, value))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    keys(broker, peer).apply(sock)
    sock.connect(broker.frontend)
    try:
        sock.send_multipart([b"", MDPC01, target.encode(), body])
        assert sock.poll(10_000), f"no answer to {peer}'s {target} with {field} = {value!r}"
        frames = sock.recv_multipart()
    finally:
        sock.close()
    assert frames[:3] == [b"", MDPC01, target.encode()], frames[:3]
    reply = env.as_envelope(frames[3])  # None: the worker echoed a body that is no envelope
    error = (reply or {}).get("payload", {}).get("error") if isinstance((reply or {}).get("payload"), dict) else None
    assert not error or error.get("code") != "INTERNAL_ERROR", reply
    wait_until(lambda: status(broker)["pending"] == 0, what="nothing left pending")
    assert status(broker)["counters"].get("internal-errors", 0) == 0
