from __future__ import annotations

import pytest

from arbiter.project.plugins import load_plugins


@pytest.fixture(scope="session")
def shipped_plugins(repo):
    plugins, _ = load_plugins([repo / "plugins"])
    return {p.name: p for p in plugins}
