"""A plain (non-editable) install works from outside the checkout: wheel, fresh venv, CLI."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv_and_runs(repo: Path, tmp_path: Path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(repo)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "arbiter/dsl/arbiter.lark" in names  # the grammar ships inside the package
    assert not any(n.startswith("dsl/") for n in names)  # no generic top-level module
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, cwd=tmp_path)
    arbiter = env_dir / "bin" / "arbiter"
    out = subprocess.run([str(arbiter), "--version"], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.startswith("arbiter, version ")
    listing = subprocess.run(
        [str(arbiter), "--root", str(repo), "plugins", "list", "--json"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert "fastapi-backend" in listing.stdout
