"""Hot reload: notice changed rules, configs and plugins, build the new snapshot off the serving
loop, and hand it over only when it is valid.

Two threads: one watches the directories (watchfiles; it sees editors' write-to-temp-then-rename
as a change too) and only raises a flag; the other builds. A burst of events, or a SIGHUP during
a build, collapses into one more build. The content hash of every input file decides whether
anything changed at all, so touching a file, or saving it unchanged, costs one hash and no
rebuild. A build that fails, or a snapshot with errors, is reported and the old one keeps
serving.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

import watchfiles

from arbiter.project.snapshot import Project, Snapshot, build_snapshot, fingerprint
from arbiter.routing.pipeline import Router

log = logging.getLogger("arbiter.reload")

WATCHED_SUFFIXES = (".arb", ".yaml", ".yml", ".json", ".md")

OnReady = Callable[[Snapshot, Router], None]
OnError = Callable[[list[str]], None]


def _relevant(change: watchfiles.Change, path: str) -> bool:
    return path.endswith(WATCHED_SUFFIXES)


class Reloader:
    """Rebuilds on file changes (when ``watch``) and on :meth:`request` (SIGHUP, tests)."""

    def __init__(
        self,
        project: Project,
        current: str,
        on_ready: OnReady,
        on_error: OnError,
        *,
        debounce_ms: int = 300,
        watch: bool = True,
        engine: str | None = None,
    ):
        self.project = project
        self.current = current
        self.on_ready = on_ready
        self.on_error = on_error
        self.debounce_ms = debounce_ms
        self.watch = watch
        self.engine = engine
        self.builds = 0
        self.unchanged = 0
        self.failures = 0
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        targets = [("arbiter-reload", self._build_loop)]
        if self.watch:
            targets.append(("arbiter-watch", self._watch_loop))
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def request(self, reason: str = "requested") -> None:
        """Ask for a rebuild; safe from any thread and from a signal handler."""
        log.info("reload %s", reason)
        self._wanted.set()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wanted.set()
        for thread in self._threads:
            thread.join(timeout)

    def _watch_loop(self) -> None:
        paths = [p for p in self.project.watched() if Path(p).is_dir()]
        if not paths:
            return
        log.info("watching %s", ", ".join(str(p) for p in paths))
        for _changes in watchfiles.watch(
            *paths,
            watch_filter=_relevant,
            debounce=self.debounce_ms,
            stop_event=self._stop,
            rust_timeout=500,
            yield_on_timeout=False,
            raise_interrupt=False,
        ):
            self.request("after a file change")

    def _build_loop(self) -> None:
        while not self._stop.is_set():
            self._wanted.wait()
            if self._stop.is_set():
                return
            self._wanted.clear()
            self.reload_now()

    def reload_now(self) -> bool:
        """Build and hand over if the inputs changed and the result is valid; True when swapped."""
        started = time.perf_counter()
        if fingerprint(self.project) == self.current:
            self.unchanged += 1
            return False
        self.builds += 1
        try:
            snapshot = build_snapshot(self.project.root, self.project.plugin_dirs or None)
            if not snapshot.ok:
                self._refuse([d.format() for d in snapshot.errors])
                return False
            router = Router(snapshot, self.engine)
        except Exception as exc:  # a reload must never take the broker down
            log.exception("reload failed")
            self._refuse([f"{type(exc).__name__}: {exc}"])
            return False
        self.current = snapshot.fingerprint
        log.info("new snapshot built in %.0f ms", (time.perf_counter() - started) * 1000)
        self.on_ready(snapshot, router)
        return True

    def _refuse(self, errors: list[str]) -> None:
        self.failures += 1
        self.on_error(errors)
