"""The reloader's view of the inputs, without a broker: which file-system changes are worth a
fingerprint, and when a refused reload stops standing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from broker_helpers import wait_until
from watchfiles import Change

from arbiter.broker.reload import ChangeFilter, Reloader
from arbiter.project.snapshot import Project, Snapshot, build_snapshot, fingerprint
from arbiter.routing.pipeline import Router

REPO = Path(__file__).resolve().parents[2]
RULE = 'rule probe {\n  priority 99\n  when text matches /probe/\n  then require fastapi-backend\n  because "p"\n}\n'
BROKEN = "rule probe {\n  when text matches /probe/\n  then\n"


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    (folder / "alpha" / "agents").mkdir(parents=True)
    (folder / "alpha" / "agents" / "writer.md").write_text("---\nname: writer\n---\n")
    (folder / "beta" / ".claude-plugin").mkdir(parents=True)
    (folder / "beta" / ".claude-plugin" / "plugin.json").write_text('{"name": "beta"}')
    return folder


def test_input_files_count_and_editor_noise_does_not(plugins: Path) -> None:
    relevant = ChangeFilter([plugins])
    agents = plugins / "alpha" / "agents"
    assert relevant(Change.modified, str(agents / "writer.md"))
    assert relevant(Change.added, str(agents / "reader.md"))
    for name in (".writer.md.swp", ".writer.md.swx", "writer.md~", ".#writer.md", "writer.tmp~"):
        for change in Change:
            assert not relevant(change, str(agents / name)), (change, name)
    probe = agents / "4913"  # vim makes and removes it to test that it may write here
    probe.write_text("")
    assert not relevant(Change.added, str(probe))
    probe.unlink()
    assert not relevant(Change.deleted, str(probe))
    (plugins / "alpha" / ".git" / "refs").mkdir(parents=True)
    assert not relevant(Change.added, str(plugins / "alpha" / ".git"))
    assert not relevant(Change.added, str(plugins / "alpha" / ".git" / "refs"))
    assert not relevant(Change.modified, str(plugins / "alpha" / ".git" / "info.json"))
    assert not relevant(Change.modified, str(plugins / "alpha"))  # a directory's own metadata


def test_directories_moved_renamed_created_and_deleted_count(plugins: Path, tmp_path: Path) -> None:
    relevant = ChangeFilter([plugins])
    aside = tmp_path / "aside"
    aside.mkdir()
    os.rename(plugins / "alpha", aside / "alpha")
    assert relevant(Change.deleted, str(plugins / "alpha"))
    os.rename(aside / "alpha", plugins / "alpha")
    assert relevant(Change.added, str(plugins / "alpha"))
    # what the directory moved back brought along is known too, without an event of its own
    os.rename(plugins / "alpha" / "agents", aside / "agents")
    assert relevant(Change.deleted, str(plugins / "alpha" / "agents"))
    os.rename(plugins / "beta", plugins / "gamma")
    assert relevant(Change.deleted, str(plugins / "beta")) and relevant(Change.added, str(plugins / "gamma"))
    shutil.rmtree(plugins / "gamma")
    assert relevant(Change.deleted, str(plugins / "gamma"))
    assert not relevant(Change.deleted, str(plugins / "gamma"))  # once gone, forgotten
    # made and removed within one batch of events: nothing to look at
    assert not relevant(Change.added, str(plugins / "brief"))
    assert not relevant(Change.deleted, str(plugins / "brief"))


def test_a_directory_replaced_by_one_of_the_same_name_stays_known(plugins: Path, tmp_path: Path) -> None:
    """A batch's events come unordered: the new directory's creation may come before the old
    one's deletion, which must not make the watcher forget the new one."""
    relevant = ChangeFilter([plugins])
    shutil.rmtree(plugins / "alpha")
    (plugins / "alpha").mkdir()
    assert relevant(Change.added, str(plugins / "alpha"))
    assert relevant(Change.deleted, str(plugins / "alpha"))
    os.rename(plugins / "alpha", tmp_path / "alpha")
    assert relevant(Change.deleted, str(plugins / "alpha"))


class Calls:
    """What the reloader told the broker, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    def ready(self, snapshot: Snapshot, router: Router) -> None:
        router.close()
        self.seen.append(("ready", snapshot.fingerprint))

    def error(self, errors: list[str]) -> None:
        self.seen.append(("error", len(errors)))

    def restored(self, digest: str) -> None:
        self.seen.append(("restored", digest))


def tiny_project(root: Path) -> Project:
    shutil.copytree(REPO / "plugins" / "fastapi-backend", root / "plugins" / "fastapi-backend")
    shutil.copytree(REPO / "configs", root / "configs")
    (root / "rules").mkdir()
    (root / "rules" / "probe.arb").write_text(RULE)
    return Project(root)


def test_inputs_back_to_the_served_ones_end_the_refusal_once(tmp_path: Path) -> None:
    project = tiny_project(tmp_path)
    served = build_snapshot(project.root).fingerprint
    calls = Calls()
    reloader = Reloader(project, served, calls.ready, calls.error, calls.restored, watch=False)
    rule = project.rules_dir / "probe.arb"

    assert not reloader.reload_now() and calls.seen == []  # nothing changed, nothing refused
    rule.write_text(BROKEN)
    assert not reloader.reload_now()
    rule.write_text(BROKEN + "\n")  # broken differently: refused again
    assert not reloader.reload_now()
    rule.write_text(RULE)
    assert not reloader.reload_now()
    assert not reloader.reload_now()  # said once: the refusal is over
    assert calls.seen == [("error", 1), ("error", 1), ("restored", served)]
    assert (reloader.refused, reloader.restores, reloader.builds) == (None, 1, 2)


def test_a_swap_ends_the_refusal_and_nothing_is_restored_after_it(tmp_path: Path) -> None:
    project = tiny_project(tmp_path)
    calls = Calls()
    reloader = Reloader(project, build_snapshot(project.root).fingerprint, calls.ready, calls.error, calls.restored)
    rule = project.rules_dir / "probe.arb"
    rule.write_text(BROKEN)
    assert not reloader.reload_now()
    rule.write_text(RULE.replace("priority 99", "priority 98"))
    assert reloader.reload_now()
    assert not reloader.reload_now()
    assert [kind for kind, _ in calls.seen] == ["error", "ready"]
    assert reloader.refused is None and reloader.current == calls.seen[-1][1]


def test_an_empty_plugin_directory_is_an_input(plugins: Path, tmp_path: Path) -> None:
    """A plugin without a single .md or .json file still changes the snapshot."""
    project = Project(tmp_path, (plugins,))
    before = fingerprint(project)
    (plugins / "delta" / "skills").mkdir(parents=True)
    assert fingerprint(project) != before
    assert "delta" in build_snapshot(tmp_path, [plugins]).plugins


def test_a_change_made_before_the_watcher_is_up_is_served(tmp_path: Path) -> None:
    """Between the first build and the watches being set no event can come; the watcher compares
    the inputs once it is up, so such a change is not missed until the next one."""
    project = tiny_project(tmp_path)
    calls = Calls()
    reloader = Reloader(project, build_snapshot(project.root).fingerprint, calls.ready, calls.error, calls.restored)
    (project.rules_dir / "probe.arb").write_text(RULE.replace("99", "98"))
    changed = fingerprint(project)
    reloader.start()
    try:
        wait_until(lambda: calls.seen, 20, what="the reloader's answer")
    finally:
        reloader.close()
    assert calls.seen == [("ready", changed)]
