"""The dashboard end to end: a real broker and workers, the dashboard as its own process, and a
headless Chromium driving the page. One broker, dashboard and browser serve the whole module.

Screenshots go to $ARBITER_SCREENSHOTS (e.g. docs/images) when set, else to a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "broker"))

from broker_helpers import broker_with, wait_until  # noqa: E402
from dashboard_harness import CHROMIUM, DASHBOARD  # noqa: E402
from loopback import free_port  # noqa: E402
from test_sdk_harness import WORKER_OPTIONS, Broker  # noqa: E402

from arbiter.cli import main  # noqa: E402
from arbiter.project.snapshot import build_snapshot  # noqa: E402
from arbiter.sdk.client import Client  # noqa: E402
from arbiter.sdk.demo_workers import plugin_worker  # noqa: E402
from arbiter.sdk.worker import Worker  # noqa: E402
from arbiter.wire import envelope as env  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FAILING = "exec-automator"  # its worker fails every request until its circuit opens (threshold 4)
FAILING_TEXT = "analyze the RFP in docs/rfp-2026.pdf and list every obligation and deadline"
LATE_SERVICE = "ledger-sync"  # no worker when its request comes, one when it is replayed

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (.ci/browser)")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with broker_with(tmp_path_factory.mktemp("dashboard"), {"request_timeout_ms": 600}) as running:
        yield running


def _failing_worker(plugin: Any, endpoint: str) -> Worker:
    worker = Worker(endpoint, plugin.name, credit=4, **WORKER_OPTIONS)

    def fail(parameters: dict[str, Any], envelope: dict[str, Any]) -> None:
        raise RuntimeError("the document store is down")

    for component in plugin.invocable:
        worker.command(component.name)(fail)
    return worker


@pytest.fixture(scope="module")
def workers(broker: Broker) -> Iterator[None]:
    """A demo worker per plugin (jira's slow enough to watch its steps), a failing one for FAILING."""
    plugins = build_snapshot(REPO).plugins.values()
    running = [
        _failing_worker(p, broker.frontend)
        if p.name == FAILING
        else plugin_worker(
            p, broker.frontend, delay=0.4 if p.name == "jira-orchestrator" else 0.0, credit=4, **WORKER_OPTIONS
        )
        for p in plugins
    ]
    for worker in running:
        worker.start()
    with Client(broker.frontend, timeout=2, retries=0) as client:
        wait_until(lambda: all(client.has_service(w.service) for w in running), what="every worker registered")
    yield
    for worker in running:
        worker.stop(timeout=5)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


def _connected(url: str) -> bool:
    try:
        return bool(_get(url + "api/overview").get("connected"))
    except OSError:
        return False


@pytest.fixture(scope="module")
def dashboard(broker: Broker, workers: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = open(tmp_path_factory.mktemp("dashboard-log") / "dashboard.log", "wb")
    command = [*DASHBOARD, "--root", str(broker.root), "dashboard", "--port", str(port)]
    command += ["--endpoint", broker.frontend, "--events", broker.events_sub, "--interval", "0.5"]
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: process.poll() is not None or _connected(url), timeout=30, what="the dashboard serves")
        assert process.poll() is None, f"the dashboard exited with {process.returncode}"
        yield url
    finally:
        process.terminate()
        try:
            assert process.wait(timeout=10) == 0, "the dashboard did not stop cleanly on SIGTERM"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
            log.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("ARBITER_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(browser: Any, dashboard: str) -> Iterator[Any]:
    """The desktop page (1280x800), with every console error and uncaught exception collected."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.errors = []
    tab.on("console", lambda message: tab.errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    tab.goto(dashboard)
    tab.wait_for_selector("#link.up", timeout=10_000)
    yield tab
    context.close()


def _route(frontend: str, text: str) -> dict[str, Any]:
    request = env.new_request("arbiter.route", "route", source="dashboard-test")
    request["payload"] = {"text": text}
    with Client(frontend, timeout=10, retries=0) as client:
        return client.request("arbiter.route", request).payload


def test_the_page_loads_live_without_console_errors(page: Any) -> None:
    page.wait_for_selector("#services tr[data-service='jira-orchestrator']", timeout=5_000)
    page.wait_for_selector("#circuits .badge[data-plugin='home-assistant'][data-state='closed']")
    assert "Arbiter" in page.title()
    assert page.errors == []


def test_a_routed_request_shows_in_the_decisions_within_a_second(page: Any, broker: Broker, shots: Path) -> None:
    page.click("a[data-tab='decisions']")
    payload = _route(broker.frontend, "write a Home Assistant automation for the porch lights at sunset")
    answered = time.monotonic()
    request_id = payload["result"]["decision"]["requestId"]
    row = f"#decisions li[data-request-id='{request_id}']"
    page.wait_for_selector(row, timeout=1_000)
    assert time.monotonic() - answered < 1.0
    assert "home-assistant" in page.inner_text(row)
    page.click(row)
    page.wait_for_selector("#rules-fired .rule", timeout=10_000)
    detail = page.inner_text("#decision-detail")
    assert "smart-home-requests" in detail and "routing.arb:" in detail  # the rule, with file:line
    assert "domain" in detail and "lights" in detail  # a fact with its evidence
    page.screenshot(path=str(shots / "dashboard-decision.png"))
    assert page.errors == []


WATCH_STEPS = """() => {
    window.stepStates = new Set();
    const note = () => document.querySelectorAll("#run-graph .node[data-step]").forEach(
        (node) => window.stepStates.add(node.dataset.step + ":" + node.dataset.status));
    new MutationObserver(note).observe(document.getElementById("run-detail"), {subtree: true, childList: true});
}"""


def test_a_chain_runs_steps_change_state_on_the_page(page: Any, broker: Broker, shots: Path) -> None:
    page.click("a[data-tab='chains']")
    page.evaluate(WATCH_STEPS)  # every state each step's box shows, however briefly
    request = env.new_request("arbiter.chain", "run", source="dashboard-test")
    request["payload"] = {"chain": "jira-delivery", "params": {"issueKey": "PROJ-42"}, "wait": False}
    with Client(broker.frontend, timeout=5, retries=0) as client:
        run_id = client.request("arbiter.chain", request).result["runId"]
    page.wait_for_selector(f"#runs li[data-run-id='{run_id}']", timeout=5_000)
    page.wait_for_selector("#run-graph .node[data-step='prepare'][data-status='completed']", timeout=5_000)
    page.screenshot(path=str(shots / "dashboard-chain.png"))
    page.wait_for_selector("#run-graph .node[data-step='docs'][data-status='completed']", timeout=10_000)
    page.wait_for_selector(f"#runs li[data-run-id='{run_id}'] .pill.completed", timeout=5_000)
    seen = set(page.evaluate("[...window.stepStates]"))
    for step in ("prepare", "work", "pr", "docs"):
        assert {f"{step}:pending", f"{step}:running", f"{step}:completed"} <= seen | {"prepare:pending"}, seen
    assert page.errors == []


def test_a_circuit_that_opens_shows(page: Any, broker: Broker) -> None:
    page.click("a[data-tab='overview']")
    for _ in range(8):  # threshold 4; each request fails at FAILING, then falls back
        _route(broker.frontend, FAILING_TEXT)
        if page.query_selector(f"#circuits .badge[data-plugin='{FAILING}'][data-state='open']"):
            break
    page.wait_for_selector(f"#circuits .badge[data-plugin='{FAILING}'][data-state='open']", timeout=3_000)
    page.wait_for_selector(f"#feed li[data-kind='circuit']:has-text('{FAILING}')", timeout=3_000)
    assert page.errors == []


def test_replaying_a_dead_letter_asks_first(page: Any, broker: Broker, shots: Path) -> None:
    page.click("a[data-tab='dead-letters']")
    request = env.new_request(LATE_SERVICE, "sync", {"ledger": "2026-Q4"}, source="dashboard-test", timeout_ms=400)
    with Client(broker.frontend, timeout=3, retries=0) as client:
        reply = client.request(LATE_SERVICE, request)  # nobody serves it: it expires into the dead letters
    assert not reply.ok and reply.error["code"] == "EXPIRED", reply.payload
    row = f"#letters tr:has-text('{LATE_SERVICE}')"
    page.wait_for_selector(row, timeout=10_000)
    worker = Worker(broker.frontend, LATE_SERVICE, **WORKER_OPTIONS)
    worker.command("sync")(lambda parameters, envelope: {"synced": parameters["ledger"]})
    worker.start()
    try:
        with Client(broker.frontend, timeout=2, retries=0) as client:
            wait_until(lambda: client.has_service(LATE_SERVICE), what="the late worker registered")
        page.click(f"{row} button.replay")
        page.wait_for_selector("dialog#confirm[open]")
        assert LATE_SERVICE in page.inner_text("#confirm-text")
        page.screenshot(path=str(shots / "dashboard-replay.png"))
        page.click("dialog#confirm button[value='cancel']")
        assert page.query_selector("dialog#confirm[open]") is None
        assert page.is_hidden("#replay-result"), "cancelled: nothing replayed"
        page.click(f"{row} button.replay")
        page.click("#confirm-replay")
        page.wait_for_selector("#replay-result.ok", timeout=10_000)
        assert "2026-Q4" in page.inner_text("#replay-result")
    finally:
        worker.stop(timeout=5)
    assert page.errors == []


def test_overview_and_phone_layouts(page: Any, browser: Any, dashboard: str, shots: Path) -> None:
    page.click("a[data-tab='overview']")
    page.wait_for_selector("#chart-rate path")
    time.sleep(1.0)  # a few more status polls for the charts
    page.screenshot(path=str(shots / "dashboard-overview.png"))
    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    try:
        tab = phone.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.goto(dashboard)
        tab.wait_for_selector("#link.up")
        tab.wait_for_selector("#chart-rate path")
        assert tab.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways on a phone"
        tab.screenshot(path=str(shots / "dashboard-phone.png"))
        assert errors == []
    finally:
        phone.close()
    assert page.errors == []


def test_a_host_other_machines_reach_needs_a_token() -> None:
    result = CliRunner().invoke(main, ["dashboard", "--host", "0.0.0.0"], env={"ARBITER_DASHBOARD_TOKEN": ""})
    assert result.exit_code == 2
    assert "--token" in result.output
