"""A plain (non-editable) install works from outside the checkout: wheel, fresh venv, CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from loopback import free_port


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

    # Inside the checkout the source tree (where arbiter.dsl is ./dsl) must not shadow the install:
    # `python broker.py` and the processes `arbiter demo` starts run from there.
    help_text = subprocess.run(
        [str(py), str(repo / "broker.py"), "--help"], check=True, capture_output=True, text=True, cwd=repo
    )
    assert "--frontend" in help_text.stdout
    ports = [free_port() for _ in range(3)]
    project = tmp_path / "project"
    for part in ("plugins", "rules", "configs"):
        shutil.copytree(repo / part, project / part)
    config = project / "configs" / "broker.yaml"
    endpoints = {"frontend": ports[0], "events_pub": ports[1], "events_sub": ports[2]}
    text = config.read_text()
    for name, port in endpoints.items():
        text = re.sub(rf"({name}: tcp://127\.0\.0\.1:)\d+", rf"\g<1>{port}", text)
    config.write_text(text)
    demo = subprocess.run(
        [
            str(arbiter),
            "--root",
            str(project),
            "demo",
            "--json",
            "Build a FastAPI endpoint for orders with MongoDB and Keycloak auth for tenant acme-corp",
        ],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert '"plugin": "fastapi-backend"' in demo.stdout
