"""Hot reload: notice changed rules, configs and plugins, build the new snapshot off the serving
loop, and hand it over only when it is valid.

Two threads: one watches the directories (watchfiles; it sees editors' write-to-temp-then-rename
as a change too) and only raises a flag; the other builds. A burst of events, or a SIGHUP during
a build, collapses into one more build. The content hash of every input file decides whether
anything changed at all, so touching a file, or saving it unchanged, costs one hash and no
rebuild. A build that fails, or a snapshot with errors, is reported and the old one keeps
serving; once the inputs are back to what is served, the broker is told the refusal is over.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import watchfiles

from arbiter.project.snapshot import Project, Snapshot, build_snapshot, fingerprint
from arbiter.routing.pipeline import Router
from arbiter.wire.envelope import iso, utc_now

log = logging.getLogger("arbiter.reload")

WATCHED_SUFFIXES = (".arb", ".yaml", ".yml", ".json", ".md", ".key", ".key_secret")
# Folders no input lives in, whose churn (version control, caches) is never worth a look.
IGNORED_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules"})
# Emacs' lock files (".#name.md", dangling links) end like inputs but are none.
IGNORED_PREFIXES = (".#",)

OnReady = Callable[[Snapshot, Router], None]
OnError = Callable[[list[str]], None]
OnRestored = Callable[[str], None]


class ChangeFilter:
    """Which file-system changes may alter the inputs: worth a fingerprint, never a rebuild alone.

    An input file's change carries its own path, but a directory moved in, out or renamed is a
    single event on the directory's path, whatever it holds. So a directory that appears counts,
    and so does one that disappears; a deleted path cannot be asked whether it was a directory,
    hence the set of directories seen so far. Editor noise (swap files, ``~`` backups, vim's
    probe file) neither ends like an input nor is a directory, and version control folders are
    skipped whole. Called from the watcher thread only.
    """

    def __init__(self, roots: Iterable[Path]):
        self.roots = tuple(Path(r) for r in roots)
        self.dirs: set[str] = set()
        for root in self.roots:
            self._remember(str(root))

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if self._ignored(path):
            return False
        if path.endswith(WATCHED_SUFFIXES):
            return True
        if change == watchfiles.Change.deleted:
            return self._forget(path)
        if change == watchfiles.Change.added and os.path.isdir(path):
            self._remember(path)
            return True
        return False  # a directory's own metadata, or a file no input is made of

    def _ignored(self, path: str) -> bool:
        full = Path(path)
        inside = next((full.relative_to(root) for root in self.roots if full.is_relative_to(root)), full)
        return inside.name.startswith(IGNORED_PREFIXES) or not IGNORED_DIRS.isdisjoint(inside.parts)

    def _remember(self, top: str) -> None:
        """Record ``top`` and every directory under it: one moved in brings its tree unannounced."""
        for folder, subdirs, _files in os.walk(top):
            subdirs[:] = [d for d in subdirs if d not in IGNORED_DIRS]
            self.dirs.add(folder)

    def _forget(self, path: str) -> bool:
        """True when ``path`` was a known directory. It is forgotten only if really gone: the
        events of one batch come unordered, so a directory replaced by another of the same name
        may report its deletion after the new one's creation."""
        if path not in self.dirs:
            return False
        if not os.path.isdir(path):
            inside = path + os.sep
            self.dirs = {d for d in self.dirs if d != path and not d.startswith(inside)}
        return True


class Reloader:
    """Rebuilds on file changes (when ``watch``) and on :meth:`request` (SIGHUP, tests).

    ``current`` is the fingerprint served, ``refused`` that of the inputs last refused (None when
    no refusal stands). Inputs equal to ``current`` again after a refusal call ``on_restored``:
    without it the broker would report the refusal for ever. Inputs equal to ``refused`` are
    built again, not skipped: the fingerprint is taken before the files are read, so the inputs a
    refusal saw may differ from the ones it was recorded under.
    """

    def __init__(
        self,
        project: Project,
        current: str,
        on_ready: OnReady,
        on_error: OnError,
        on_restored: OnRestored,
        *,
        debounce_ms: int = 300,
        watch: bool = True,
        engine: str | None = None,
    ):
        self.project = project
        self.current = current
        self.refused: str | None = None
        self.on_ready = on_ready
        self.on_error = on_error
        self.on_restored = on_restored
        self.debounce_ms = debounce_ms
        self.watch = watch
        self.engine = engine
        self.builds = 0
        self.unchanged = 0
        self.failures = 0
        self.restores = 0
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
        """Ask for a rebuild; safe from any thread. Not from a signal handler: it logs, and
        logging takes locks the interrupted code may hold, so SIGHUP posts it to the loop."""
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
        up = False
        for changes in watchfiles.watch(
            *paths,
            watch_filter=ChangeFilter(paths),
            debounce=self.debounce_ms,
            stop_event=self._stop,
            rust_timeout=500,
            yield_on_timeout=True,
            raise_interrupt=False,
        ):
            if changes:
                self.request("after a file change")
            elif not up:
                # The watches exist from here on; a file changed between the first build and now
                # sent no event, so the inputs are compared once (one hash when nothing changed).
                self.request("once the watcher is up")
            up = True

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
        digest = fingerprint(self.project)
        if digest == self.current:
            self._unchanged(digest)
            return False
        self.builds += 1
        try:
            snapshot = build_snapshot(self.project.root, self.project.plugin_dirs or None)
            if not snapshot.ok:
                self._refuse(snapshot.fingerprint, [d.format() for d in snapshot.errors])
                return False
            router = Router(snapshot, self.engine)
        except Exception as exc:  # a reload must never take the broker down
            log.exception("reload failed")
            self._refuse(digest, [f"{type(exc).__name__}: {exc}"])
            return False
        self.current, self.refused = snapshot.fingerprint, None
        log.info("new snapshot built in %.0f ms", (time.perf_counter() - started) * 1000)
        self.on_ready(snapshot, router)
        return True

    def _unchanged(self, digest: str) -> None:
        """The inputs are what is served: nothing to build, but a refusal may have ended."""
        if self.refused is None:
            self.unchanged += 1
            return
        log.info("inputs back to the served snapshot %s; the refused %s is gone", digest[:12], self.refused[:12])
        self.refused = None
        self.restores += 1
        self.on_restored(digest)

    def _refuse(self, digest: str, errors: list[str]) -> None:
        self.failures += 1
        self.refused = digest
        self.on_error(errors)


class ReloadRecord:
    """The broker's side of reloads, as ``arbiter status`` shows it (``snapshot``) and
    ``system/reload`` announces it: which snapshot is served and since when, and whether the
    newest attempt was refused. Each method returns the event to publish."""

    def __init__(self, fingerprint: str, counters: Counter[str]):
        self.counters = counters
        self.state: dict[str, Any] = {"fingerprint": fingerprint, "loadedAt": iso(utc_now()), "lastReloadOk": True}

    def swapped(self, fingerprint: str) -> dict[str, Any]:
        self.counters["reloads"] += 1
        self.state.update(fingerprint=fingerprint, loadedAt=iso(utc_now()), lastReloadOk=True)
        log.info("reloaded: fingerprint %s", fingerprint[:12])
        return {"ok": True, "fingerprint": fingerprint}

    def refused(self, errors: list[str]) -> dict[str, Any]:
        """The old snapshot keeps serving; the errors say why the new one was refused."""
        self.counters["reload-failures"] += 1
        self.state.update(lastReloadOk=False, lastError={"at": iso(utc_now()), "errors": errors[:20]})
        log.error("reload refused, still serving %s:\n  %s", self.state["fingerprint"][:12], "\n  ".join(errors[:20]))
        return {"ok": False, "errors": errors[:20]}

    def restored(self, fingerprint: str) -> dict[str, Any]:
        """The inputs are back to the snapshot served, so the refusal no longer stands. Nothing is
        swapped; ``lastError`` stays as history, as after a successful reload, and
        ``lastReloadOk`` says it is over."""
        self.counters["reload-restores"] += 1
        self.state.update(lastReloadOk=True)
        log.info("the refused reload no longer stands: the files are back to %s", fingerprint[:12])
        return {"ok": True, "fingerprint": fingerprint, "restored": True}
