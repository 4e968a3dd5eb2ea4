"""A real broker in a subprocess, for the SDK and interop tests (this module holds no tests).

Each broker gets a private project root (a copy of the shipped plugins, rules and configs,
with fast heartbeats) and free ports on 127.0.0.1. It is killed on teardown whatever happens.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml
from loopback import free_port  # noqa: F401 - tests import it from here too

from arbiter.sdk.client import Client, RequestTimeout

REPO = Path(__file__).resolve().parents[2]
HEARTBEAT_S = 0.5
LIVENESS = 4
STARTUP_TIMEOUT_S = 60.0

# Another MDP broker to test the SDK against, as a command line (default: this repository's broker.py).
OTHER_BROKER = os.environ.get("ARBITER_TEST_BROKER", "")

WORKER_OPTIONS = {"heartbeat_interval": HEARTBEAT_S, "liveness": LIVENESS, "reconnect_max": 1.0}


def make_project(
    root: Path, frontend: str, events_pub: str, events_sub: str, overrides: dict[str, Any] | None = None
) -> Path:
    """Copy the shipped project and point its broker config at our ports and fast heartbeats.

    ``overrides`` replaces top-level sections of configs/broker.yaml (e.g. small ``limits``),
    so a test can reach a limit with a handful of messages instead of thousands.
    """
    for name in ("plugins", "rules", "configs"):
        shutil.copytree(REPO / name, root / name)
    config_path = root / "configs" / "broker.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["endpoints"] = {"frontend": frontend, "events_pub": events_pub, "events_sub": events_sub}
    config["heartbeat"] = {"interval_ms": int(HEARTBEAT_S * 1000), "liveness": LIVENESS}
    config.setdefault("reload", {})["watch"] = False
    for section, value in (overrides or {}).items():
        config[section] = {**config[section], **value} if isinstance(value, dict) and section in config else value
    config_path.write_text(yaml.safe_dump(config))
    return root


@dataclass
class Broker:
    """One broker process bound to fixed ports, restartable on the same ports."""

    root: Path
    frontend: str
    events_pub: str
    events_sub: str
    log_dir: Path
    process: subprocess.Popen | None = None
    starts: int = 0
    _logs: list = field(default_factory=list)

    def command(self) -> list[str]:
        program = shlex.split(OTHER_BROKER) if OTHER_BROKER else [sys.executable, str(REPO / "broker.py")]
        return [
            *program,
            "--root",
            str(self.root),
            "--frontend",
            self.frontend,
            "--events-pub",
            self.events_pub,
            "--events-sub",
            self.events_sub,
        ]

    def start(self) -> None:
        self.starts += 1
        out = open(self.log_dir / f"broker-{self.starts}.log", "wb")
        self._logs.append(out)
        self.process = subprocess.Popen(
            self.command(), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        self.wait_ready()

    def wait_ready(self) -> None:
        """Ready means answering MMI; polls in short attempts, bounded overall."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with Client(self.frontend, timeout=0.5, retries=0) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    pytest.fail(f"broker exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    client.mmi("mmi.service")
                    return
                except RequestTimeout:
                    continue
        pytest.fail(f"broker did not answer within {STARTUP_TIMEOUT_S}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """Die like a crash: no chance to flush or say goodbye."""
        self._stop(signal.SIGKILL)

    def stop(self) -> None:
        self._stop(signal.SIGTERM)

    def _stop(self, sig: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def close(self) -> None:
        self.kill()
        for log in self._logs:
            log.close()

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted(self.log_dir.glob("broker-*.log"))
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else ""


def broker_available() -> bool:
    return bool(OTHER_BROKER) or (REPO / "broker.py").is_file()


def launch_broker(
    tmp: Path,
    overrides: dict[str, Any] | None = None,
    project: Callable[[Path], None] | None = None,
    kind: type[Broker] | None = None,
) -> Iterator[Broker]:
    """Generator body for fixtures: a started broker, always killed afterwards. ``project`` may
    change the copied project (manifests, rules) before the broker reads it; ``kind``: a
    :class:`Broker` that starts its process otherwise (other options)."""
    assert broker_available(), "broker.py is missing from this checkout"
    ports = [free_port() for _ in range(3)]
    frontend, pub, sub = (f"tcp://127.0.0.1:{p}" for p in ports)
    (tmp / "project").mkdir()
    (tmp / "logs").mkdir()
    root = make_project(tmp / "project", frontend, pub, sub, overrides)
    if project is not None:
        project(root)
    broker = (kind or Broker)(root, frontend, pub, sub, tmp / "logs")
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout``; returns the last result (no timing asserted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
