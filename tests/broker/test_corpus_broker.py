"""The broker serving the public plugin corpus as it is: 34 plain Claude Code plugins, no rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from broker_helpers import wait_until
from test_sdk_harness import HEARTBEAT_S, LIVENESS, WORKER_OPTIONS, free_port

from arbiter.broker.resilience import CLIENT_ERRORS
from arbiter.project.snapshot import build_snapshot
from arbiter.routing.pipeline import Request, Router
from arbiter.sdk.client import Client, RequestTimeout
from arbiter.sdk.demo_workers import demo_workers
from arbiter.wire import envelope as env

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CASES = yaml.safe_load((REPO / "tests" / "routing" / "corpus_cases.yaml").read_text())


@pytest.fixture(scope="module")
def corpus_broker(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Router]]:
    root = tmp_path_factory.mktemp("corpus-project")
    frontend, pub, sub = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
    (root / "configs").mkdir()
    config = {
        "endpoints": {"frontend": frontend, "events_pub": pub, "events_sub": sub},
        "heartbeat": {"interval_ms": int(HEARTBEAT_S * 1000), "liveness": LIVENESS},
        "reload": {"watch": False},
    }
    (root / "configs" / "broker.yaml").write_text(yaml.safe_dump(config))
    log = open(root / "broker.log", "wb")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "broker.py"), "--root", str(root), "--plugins-dir", str(corpus)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    snapshot = build_snapshot(root, [corpus])
    workers = demo_workers(snapshot.plugins.values(), frontend, delay=0.0, **WORKER_OPTIONS)
    try:
        for worker in workers:
            worker.start()
        with Client(frontend, timeout=1, retries=0) as client:

            def all_registered() -> bool:
                try:
                    return all(client.has_service(w.service) for w in workers)
                except RequestTimeout:
                    return False

            assert wait_until(all_registered, timeout=60), (root / "broker.log").read_text()[-2000:]
        yield frontend, Router(snapshot)
    finally:
        for worker in workers:
            worker.stop(timeout=5)
        process.kill()
        process.wait(10)
        log.close()


def route(frontend: str, text: str) -> dict[str, Any]:
    request = env.new_request("arbiter.route", "route")
    request["payload"] = {"text": text}
    with Client(frontend, timeout=20, retries=0) as client:
        return client.request("arbiter.route", request).payload


def test_corpus_requests_reach_the_chosen_plugins_worker(corpus_broker: tuple[str, Router]) -> None:
    frontend, router = corpus_broker
    cases = CASES[::6]
    assert len(cases) >= 20
    for case in cases:
        expected = router.route(Request(case["text"])).decision.primary_plugin
        payload = route(frontend, case["text"])
        if expected is None:
            assert payload["error"]["code"] == "NO_ROUTE", case
            continue
        result = payload["result"]
        # the broker decides as the command line does, and that plugin's own worker answered
        assert result["decision"]["routingDecision"]["primaryPlugin"] == expected, case
        assert result["plugin"] == expected and not result["degraded"], (case, result["steps"][0])
        if payload["status"] == "success":
            assert result["result"]["plugin"] == expected
        else:  # a demo command that needs parameters the text does not give
            assert payload["error"]["plugin"]["code"] in CLIENT_ERRORS, payload["error"]
