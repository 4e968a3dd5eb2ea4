"""The dashboard on two brokers sharing one PostgreSQL store: both are listed on the overview; when
one is SIGKILLed the page shows it down within a few seconds, and decisions made through the other
still appear, marked with their broker. Real brokers, a real worker connected to both, the
dashboard as its own process, a headless Chromium."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "broker"))

from broker_helpers import wait_until  # noqa: E402
from dashboard_harness import CHROMIUM, DASHBOARD  # noqa: E402
from loopback import free_port  # noqa: E402
from test_multi_broker import pg_url, two_brokers  # noqa: E402, F401 (a fixture)
from test_sdk_harness import WORKER_OPTIONS, Broker  # noqa: E402

from arbiter.project.snapshot import build_snapshot  # noqa: E402
from arbiter.sdk.client import Client  # noqa: E402
from arbiter.sdk.demo_workers import plugin_worker  # noqa: E402
from arbiter.wire import envelope as env  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "home-assistant"
TEXT = "write a Home Assistant automation for the porch lights at sunset"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (.ci/browser)")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _both_up(url: str) -> bool:
    try:
        return [b["up"] for b in _get(url + "api/overview")["brokers"]] == [True, True]
    except OSError:
        return False


def _route(frontend: str, text: str) -> dict[str, Any]:
    request = env.new_request("arbiter.route", "route", source="dashboard-test")
    request["payload"] = {"text": text}
    with Client(frontend, timeout=10, retries=0) as client:
        return client.request("arbiter.route", request).payload


def _worker(a: Broker, b: Broker) -> Any:
    plugin = build_snapshot(REPO).plugins[PLUGIN]
    worker = plugin_worker(plugin, f"{a.frontend},{b.frontend}", credit=4, **WORKER_OPTIONS)
    worker.start()
    for broker in (a, b):
        with Client(broker.frontend, timeout=2, retries=0) as client:
            wait_until(lambda c=client: c.has_service(PLUGIN), what=f"the worker registered with {broker.frontend}")
    return worker


def _dashboard(a: Broker, b: Broker, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [*DASHBOARD, "--root", str(a.root), "dashboard", "--port", str(port)]
    command += ["--endpoint", f"{a.frontend},{b.frontend}", "--events", f"{a.events_sub},{b.events_sub}"]
    command += ["--interval", "0.5"]
    process = subprocess.Popen(command, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}/"


def test_the_dashboard_lists_both_brokers_and_follows_the_one_left(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
    browser: Any,
) -> None:
    with two_brokers(tmp_path, pg_url) as (a, b):
        worker = _worker(a, b)
        process, url = _dashboard(a, b, tmp_path / "dashboard.log")
        try:
            wait_until(lambda: process.poll() is not None or _both_up(url), 30, what="the dashboard sees both brokers")
            assert process.poll() is None, (tmp_path / "dashboard.log").read_text()
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            page.wait_for_selector("#brokers tr[data-broker='a'][data-up='true']", timeout=10_000)
            page.wait_for_selector("#brokers tr[data-broker='b'][data-up='true']", timeout=5_000)
            assert page.is_visible("#brokers-card")

            a.kill()
            killed = time.monotonic()
            page.wait_for_selector("#brokers tr[data-broker='a'][data-up='false']", timeout=5_000)
            assert time.monotonic() - killed < 5.0
            assert page.is_visible("#link.up"), "the other broker still answers"

            page.click("a[data-tab='decisions']")
            payload = _route(b.frontend, TEXT)
            request_id = payload["result"]["decision"]["requestId"]
            row = f"#decisions li[data-request-id='{request_id}'][data-broker='b']"
            page.wait_for_selector(row, timeout=3_000)
            assert PLUGIN in page.inner_text(row)

            detail = wait_until(lambda: _found(url, request_id), 10, what="the decision recorded")
            assert detail["explained"] is not None and detail["explainError"] is None, detail["explainError"]
            assert errors == []
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=5)
            worker.stop(timeout=5)


def _found(url: str, request_id: str) -> dict[str, Any] | None:
    try:
        return _get(url + f"api/decisions/{request_id}")
    except urllib.error.HTTPError:
        return None
