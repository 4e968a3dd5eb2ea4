"""Hot reload on a running broker: edits under load, broken edits, files put back as served,
plugin directories moved and copied, and memory over many reloads."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq
from broker_helpers import broker_with, recv, status, subscriber, wait_counter, wait_until
from test_sdk_harness import WORKER_OPTIONS, Broker

from arbiter.project.snapshot import Project, build_snapshot, fingerprint
from arbiter.sdk.client import Client, RequestTimeout
from arbiter.sdk.demo_workers import plugin_worker
from arbiter.wire import envelope as env

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PROBE_TEXT = "probe: build a FastAPI endpoint with MongoDB"
CYCLE = ["home-assistant", "exec-automator", "frontend-powerhouse", "jira-orchestrator"]
BROKEN = {3, 7, 11, 15, 18}


def probe_rule(plugin: str) -> str:
    return f'rule reload-probe {{\n  priority 99\n  when text matches /probe/\n  then require {plugin}\n  because "probe"\n}}\n'


def replace_file(path: Path, content: str | bytes) -> None:
    """Write the way editors do: a temporary file renamed over the old one."""
    temp = path.with_suffix(".tmp~")
    temp.write_bytes(content.encode() if isinstance(content, str) else content)
    os.replace(temp, path)


def route(client: Client) -> dict[str, Any]:
    """The plugin the broker's rules chose for the probe text: the one that ran it, or the one
    whose command the broker asked input for (the probe states no command parameters)."""
    request = env.new_request("arbiter.route", "route", timeout_ms=20_000)
    request["payload"] = {"text": PROBE_TEXT, "collaborate": False}
    reply = client.request("arbiter.route", request)
    if reply.ok:
        return reply.result
    assert reply.error["code"] == "NEEDS_INPUT", reply.error
    return {"plugin": reply.error["decision"]["routingDecision"]["primaryPlugin"]}


class Load:
    """A client thread routing the probe text back to back, remembering every answer in order."""

    def __init__(self, frontend: str):
        self.frontend = frontend
        self.answers: list[str] = []
        self.lost: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with Client(self.frontend, timeout=15, retries=0) as client:
            while not self.stop.is_set():
                try:
                    self.answers.append(route(client)["plugin"])
                except RequestTimeout as exc:
                    self.lost.append(str(exc))


def test_edits_under_load_swap_exactly_when_valid(tmp_path: Path) -> None:
    def project(root: Path) -> None:
        (root / "rules" / "probe.arb").write_text(probe_rule("lobbi-platform-manager"))

    with broker_with(tmp_path, {"reload": {"watch": True, "debounce_ms": 50}}, project) as broker:
        snapshot = build_snapshot(REPO)
        workers = [
            plugin_worker(p, broker.frontend, delay=0.0, credit=8, **WORKER_OPTIONS) for p in snapshot.plugins.values()
        ]
        for worker in workers:
            worker.start()
        try:
            with Client(broker.frontend, timeout=10, retries=0) as client:
                wait_until(lambda: all(client.has_service(w.service) for w in workers), what="every worker registered")
                assert route(client)["plugin"] == "lobbi-platform-manager"
                load = Load(broker.frontend)
                load.thread.start()
                wait_until(lambda: load.answers or load.lost, what="the load routed before the first edit")
                expected = ["lobbi-platform-manager"]
                probe = broker.root / "rules" / "probe.arb"
                valid = 0
                for edit in range(20):
                    before = status(broker.frontend)["counters"]
                    if edit in BROKEN:
                        replace_file(probe, "rule reload-probe {\n  priority 99\n  when text matches /probe/\n  then\n")
                        failures = before.get("reload-failures", 0)
                        assert wait_counter(broker.frontend, "reload-failures", failures), f"edit {edit} unnoticed"
                        # the old snapshot keeps serving, and status says the edit was refused
                        assert route(client)["plugin"] == expected[-1]
                        assert status(broker.frontend)["snapshot"]["lastReloadOk"] is False
                        continue
                    plugin = CYCLE[valid % len(CYCLE)]
                    valid += 1
                    replace_file(probe, probe_rule(plugin))
                    assert wait_counter(broker.frontend, "reloads", before.get("reloads", 0)), (
                        f"edit {edit} never landed"
                    )
                    # a request sent after the broker reported the swap sees the new rules
                    assert route(client)["plugin"] == plugin
                    expected.append(plugin)
                    # and so does the load's next request but one (the one in flight may be older)
                    wait_until(
                        lambda seen=len(load.answers): len(load.answers) >= seen + 2 or load.lost,
                        30,
                        0.01,
                        what=f"the load routed after edit {edit}",
                    )
                load.stop.set()
                load.thread.join(30)
                info = status(broker.frontend)
        finally:
            for worker in workers:
                worker.stop(timeout=5)
    assert not load.lost, load.lost
    changes = [p for i, p in enumerate(load.answers) if i == 0 or p != load.answers[i - 1]]
    assert changes == expected, ("the load saw other rules than the edits made", changes, expected)
    assert info["counters"]["reloads"] == 15
    assert info["counters"]["reload-failures"] >= 5
    assert info["snapshot"]["lastReloadOk"] and "probe.arb" in info["snapshot"]["lastError"]["errors"][0]
    assert info["counters"]["dropped"].get("expired", 0) == 0


def tiny_project(root: Path) -> None:
    """One plugin and one rule: a reload costs little, so many of them fit in a test."""
    shutil.rmtree(root / "plugins")
    shutil.copytree(REPO / "plugins" / "fastapi-backend", root / "plugins" / "fastapi-backend")
    for path in (root / "rules").iterdir():
        path.unlink()
    (root / "rules" / "probe.arb").write_text(probe_rule("fastapi-backend"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.perf
def test_five_hundred_reloads_leave_memory_flat(tmp_path: Path, record_property) -> None:
    with broker_with(tmp_path, {"reload": {"watch": False, "debounce_ms": 0}}, tiny_project) as broker:
        probe = broker.root / "rules" / "probe.arb"
        pid = broker.process.pid
        samples: dict[int, int] = {}
        for n in range(1, 501):
            replace_file(probe, probe_rule("fastapi-backend").replace("probe", f"probe{n % 2}"))
            broker.process.send_signal(signal.SIGHUP)
            assert wait_counter(broker.frontend, "reloads", n - 1, timeout=30), f"reload {n} never landed"
            if n in (100, 500):
                samples[n] = rss_kb(pid)
    growth = samples[500] - samples[100]
    record_property("rss_after_100_reloads_kb", samples[100])
    record_property("rss_after_500_reloads_kb", samples[500])
    assert growth < 8_000, f"RSS grew {growth} kB between reload 100 and 500 ({samples})"


WATCHING = {"reload": {"watch": True, "debounce_ms": 50}}
FASTAPI_TEXT = "build a FastAPI endpoint with MongoDB"
JIRA_TEXT = "create a jira issue for the sprint"


def served(broker: Broker) -> dict[str, Any]:
    return status(broker.frontend)["snapshot"]


def serves_the_files(broker: Broker) -> bool:
    """Whether the broker serves the project's files as they are on disk now."""
    return served(broker)["fingerprint"] == fingerprint(Project(broker.root))


def arbiter_status(broker: Broker) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "arbiter", "--root", str(broker.root), "status", "--endpoint", broker.frontend],
        capture_output=True,
        text=True,
        timeout=60,
    )


def reload_events(sock: zmq.Socket, until: Any) -> list[dict[str, Any]]:
    """The payloads of ``system/reload`` up to the first for which ``until`` is true."""
    got: list[dict[str, Any]] = []
    while not got or not until(got[-1]):
        frames = recv(sock, 20)
        assert frames is not None, f"no further system/reload event after {got}"
        got.append(orjson.loads(frames[1])["payload"])
    return got


def test_restoring_the_served_files_ends_a_refused_reload(tmp_path: Path) -> None:
    with broker_with(tmp_path, WATCHING) as broker:
        ctx = zmq.Context()
        events = subscriber(ctx, broker, "system/reload")
        try:
            rules = broker.root / "rules" / "routing.arb"
            original = rules.read_bytes()
            before = served(broker)

            replace_file(rules, "rule broken {\n  when text matches /x/\n  then\n")
            wait_until(lambda: served(broker)["lastReloadOk"] is False, what="the broken rule file was refused")
            refused = arbiter_status(broker)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "LAST RELOAD REFUSED" in refused.stdout

            replace_file(rules, original)
            wait_until(lambda: served(broker)["lastReloadOk"] is True, what="the restored files were noticed")
            info = status(broker.frontend)
            shown = arbiter_status(broker)
            got = reload_events(events, lambda payload: payload.get("ok"))
        finally:
            events.close()
            ctx.term()
    assert shown.returncode == 0, shown.stdout + shown.stderr
    snapshot = info["snapshot"]
    # nothing was rebuilt: the snapshot that was served all along is served still
    assert (snapshot["fingerprint"], snapshot["loadedAt"]) == (before["fingerprint"], before["loadedAt"])
    assert info["counters"].get("reloads", 0) == 0 and info["counters"]["reload-restores"] == 1
    assert "routing.arb" in snapshot["lastError"]["errors"][0]  # kept as history
    assert got[-1] == {"ok": True, "fingerprint": before["fingerprint"], "restored": True}
    assert got[:-1] and all(payload["ok"] is False for payload in got[:-1]), got


def two_plugins(root: Path) -> None:
    """Two plugins and no rules: either plugin may go without the rules naming a missing one."""
    shutil.rmtree(root / "plugins")
    for name in ("fastapi-backend", "home-assistant"):
        shutil.copytree(REPO / "plugins" / name, root / "plugins" / name)
    for path in (root / "rules").iterdir():
        path.unlink()


def explain(broker: Broker, text: str) -> dict[str, Any]:
    request = env.new_request("arbiter.explain", "explain", timeout_ms=20_000)
    request["payload"] = {"text": text}
    with Client(broker.frontend, timeout=10, retries=0) as client:
        return client.request("arbiter.explain", request).result


def lead(decision: dict[str, Any]) -> str | None:
    """The plugin that leads: the primary, or (no worker runs in these tests) the one that fits
    but no live worker serves."""
    routing = decision["routingDecision"]
    return routing["primaryPlugin"] or next(iter(routing.get("unservedPlugins", ())), None)


def candidates(decision: dict[str, Any]) -> set[str]:
    return {score["plugin"] for score in decision["capabilityScores"]}


def test_plugin_directories_moved_out_back_and_copied_in_are_served(tmp_path: Path) -> None:
    with broker_with(tmp_path, WATCHING, two_plugins) as broker:
        plugins = broker.root / "plugins"
        aside = tmp_path / "aside"
        aside.mkdir()
        assert served(broker)["plugins"] == 2
        assert lead(explain(broker, FASTAPI_TEXT)) == "fastapi-backend"

        # one rename of a directory: a single event on the directory's path
        os.rename(plugins / "fastapi-backend", aside / "fastapi-backend")
        wait_until(lambda: serves_the_files(broker), what="the plugin moved out was noticed")
        assert served(broker)["plugins"] == 1
        gone = explain(broker, FASTAPI_TEXT)
        assert lead(gone) is None and "fastapi-backend" not in candidates(gone)
        request = env.new_request("arbiter.route", "route", timeout_ms=20_000)
        request["payload"] = {"text": FASTAPI_TEXT}
        with Client(broker.frontend, timeout=10, retries=0) as client:
            reply = client.request("arbiter.route", request)
        assert not reply.ok and reply.error["code"] == "NO_ROUTE", reply.envelope

        os.rename(aside / "fastapi-backend", plugins / "fastapi-backend")
        wait_until(lambda: serves_the_files(broker), what="the plugin moved back was noticed")
        assert served(broker)["plugins"] == 2
        assert lead(explain(broker, FASTAPI_TEXT)) == "fastapi-backend"

        # the directory moved back in is watched like the rest
        agent = sorted((plugins / "fastapi-backend" / "agents").glob("*.md"))[0]
        agent.write_text(agent.read_text() + "\n")
        wait_until(lambda: serves_the_files(broker), what="an edit inside the moved-back plugin was noticed")

        # a part of a plugin moved out, then the whole directory of another plugin
        os.rename(plugins / "home-assistant" / "agents", aside / "home-assistant-agents")
        wait_until(lambda: serves_the_files(broker), what="the agents directory moved out was noticed")
        os.rename(plugins / "home-assistant", aside / "home-assistant")
        wait_until(lambda: serves_the_files(broker), what="the second plugin moved out was noticed")
        assert served(broker)["plugins"] == 1

        shutil.copytree(REPO / "plugins" / "jira-orchestrator", plugins / "jira-orchestrator")
        wait_until(lambda: serves_the_files(broker), what="the plugin copied in was noticed")
        info = status(broker.frontend)
        jira = explain(broker, JIRA_TEXT)
    assert info["snapshot"]["plugins"] == 2 and info["snapshot"]["lastReloadOk"] is True
    assert info["counters"].get("reload-failures", 0) == 0
    assert lead(jira) == "jira-orchestrator"
