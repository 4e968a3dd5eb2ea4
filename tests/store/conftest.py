"""Shared state on both databases: a fresh store per test (SQLite, and PostgreSQL in a schema of its
own), a clock the tests move, and processes started together on one store."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from arbiter.store import context, events, locks, models
from arbiter.store import database as state

REPO = Path(__file__).resolve().parents[2]
PG = {"host": "127.0.0.1", "port": 5432, "dbname": "test", "user": "postgres"}


def _postgres_available() -> bool:
    try:
        import psycopg2

        psycopg2.connect(**PG, connect_timeout=2).close()
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, open store; other processes may open it too."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
        state.open_store(url)
        yield url
        state.close_store()
        return
    if not _postgres_available() and not os.environ.get("CI"):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    yield from _pg_store()


def _pg_store() -> Iterator[str]:
    import psycopg2

    schema = "st_" + uuid.uuid4().hex[:8]
    con = psycopg2.connect(**PG)
    con.autocommit = True
    con.cursor().execute(f"CREATE SCHEMA {schema}")
    try:
        url = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
        state.open_store(url)
        yield url
        state.close_store()
    finally:
        con.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        con.close()


class Clock:
    """The time the store's shared-state modules see, moved by hand instead of slept through."""

    def __init__(self) -> None:
        self.now = models.now()

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moved = Clock()
    for module in (context, locks, events):
        monkeypatch.setattr(module, "clock", moved)
    return moved


Together = Callable[[str, list[list[str]]], list[str]]


@pytest.fixture
def together(tmp_path: Path) -> Together:
    """Run a Python script in several processes at once and return what each printed. Each gets
    its own arguments: the store's URL, a name of its own, then any more. :data:`PRELUDE` opens
    the store, says it is ready and waits until all are, so their work overlaps."""

    def run(script: str, argv: list[list[str]], timeout_s: float = 120) -> list[str]:
        start = tmp_path / f"start-{uuid.uuid4().hex[:6]}"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", PRELUDE + script, str(start), *args],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args in argv
        ]
        try:
            deadline = time.monotonic() + 60
            while not all(Path(f"{start}.{args[1]}").exists() for args in argv):
                assert time.monotonic() < deadline, "the processes did not get ready"
                assert all(proc.poll() is None for proc in procs), [proc.communicate() for proc in procs]
                time.sleep(0.02)
            start.touch()
            outputs = [proc.communicate(timeout=timeout_s) for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        for proc, (_out, err) in zip(procs, outputs):
            assert proc.returncode == 0, err
        return [out for out, _err in outputs]

    return run


# What every script starts with: open the store named by the second argument, say it is ready,
# wait for the go.
PRELUDE = """
import os, sys, time
from pathlib import Path
from arbiter.store import database as state
START, URL, ME = sys.argv[1], sys.argv[2], sys.argv[3]
state.open_store(URL)
Path(f"{START}.{ME}").touch()
while not os.path.exists(START):
    time.sleep(0.005)
"""
