"""``arbiter keys new`` and ``keys list``: pairs on disk with private modes, no silent overwrite,
and a listing that says who in configs/security.yaml uses each key."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import zmq.auth
from click.testing import CliRunner

from arbiter.cli import main

POSIX = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def arbiter(root: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--root", str(root), *args])
    return result.exit_code, result.stdout, result.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_writes_a_pair_and_prints_only_the_public_key(tmp_path):
    code, out, _ = arbiter(tmp_path, "keys", "new", "web-client")
    assert code == 0
    public, secret = zmq.auth.load_certificate(tmp_path / "keys" / "web-client.key_secret")
    assert zmq.auth.load_certificate(tmp_path / "keys" / "web-client.key") == (public, None)
    assert public.decode() in out and str(tmp_path / "keys" / "web-client.key") in out
    assert secret.decode() not in out
    assert "public_key_file: keys/web-client.key" in out  # what to write in configs/security.yaml


@POSIX
def test_new_makes_the_secret_and_its_folder_private(tmp_path):
    assert arbiter(tmp_path, "keys", "new", "broker")[0] == 0
    assert mode(tmp_path / "keys") == 0o700
    assert mode(tmp_path / "keys" / "broker.key_secret") == 0o600
    assert mode(tmp_path / "keys" / "broker.key") == 0o644
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["broker.key", "broker.key_secret"]


@POSIX
def test_new_keeps_the_mode_of_an_existing_folder(tmp_path):
    (tmp_path / "certs").mkdir(mode=0o755)
    (tmp_path / "certs").chmod(0o755)
    assert arbiter(tmp_path, "keys", "new", "broker", "--dir", str(tmp_path / "certs"))[0] == 0
    assert mode(tmp_path / "certs") == 0o755
    assert mode(tmp_path / "certs" / "broker.key_secret") == 0o600


def test_new_refuses_to_overwrite_without_force(tmp_path):
    assert arbiter(tmp_path, "keys", "new", "broker")[0] == 0
    before = zmq.auth.load_certificate(tmp_path / "keys" / "broker.key_secret")
    code, out, err = arbiter(tmp_path, "keys", "new", "broker")
    assert code == 1 and out == ""
    assert "broker.key already exists" in err and "--force" in err
    assert zmq.auth.load_certificate(tmp_path / "keys" / "broker.key_secret") == before
    code, out, _ = arbiter(tmp_path, "keys", "new", "broker", "--force")
    assert code == 0
    after = zmq.auth.load_certificate(tmp_path / "keys" / "broker.key_secret")
    assert after != before and after[0].decode() in out


def test_new_refuses_when_only_the_secret_is_left(tmp_path):
    assert arbiter(tmp_path, "keys", "new", "broker")[0] == 0
    (tmp_path / "keys" / "broker.key").unlink()
    code, _, err = arbiter(tmp_path, "keys", "new", "broker")
    assert code == 1 and "broker.key_secret already exists" in err


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ""])
def test_new_refuses_names_that_are_not_plain_file_names(tmp_path, name):
    code, _, err = arbiter(tmp_path, "keys", "new", name)
    assert code == 2 and "NAME" in err
    assert not (tmp_path / "keys").exists()


def test_new_honours_dir(tmp_path):
    code, out, _ = arbiter(tmp_path, "keys", "new", "peer", "--dir", str(tmp_path / "elsewhere" / "k"))
    assert code == 0
    assert (tmp_path / "elsewhere" / "k" / "peer.key").is_file()
    assert "public_key_file: elsewhere/k/peer.key" in out


def _project(root: Path) -> dict[str, str]:
    """Three pairs, two of them named in configs/security.yaml, one of those without its secret."""
    for name in ("broker", "web-client", "spare"):
        assert arbiter(root, "keys", "new", name)[0] == 0
    (root / "keys" / "web-client.key_secret").unlink()  # the peer keeps it, not the broker's host
    (root / "configs").mkdir()
    (root / "configs" / "security.yaml").write_text(
        "curve:\n  secret_key_file: keys/broker.key_secret\n"
        "identities:\n  web-client:\n    public_key_file: keys/web-client.key\n"
    )
    return {p.stem: zmq.auth.load_certificate(p)[0].decode() for p in (root / "keys").glob("*.key")}


def test_list_json_says_which_identity_uses_a_key(tmp_path):
    public = _project(tmp_path)
    code, out, _ = arbiter(tmp_path, "keys", "list", "--json")
    assert code == 0
    entries = {e["name"]: e for e in json.loads(out)}
    assert sorted(entries) == ["broker", "spare", "web-client"]
    assert entries["web-client"] == {
        "name": "web-client",
        "publicKey": public["web-client"],
        "publicKeyFile": str(tmp_path / "keys" / "web-client.key"),
        "secret": False,
        "identity": "web-client",
        "broker": False,
        "problem": None,
    }
    assert entries["broker"]["broker"] is True and entries["broker"]["identity"] is None
    assert entries["broker"]["secret"] is True
    assert entries["spare"]["identity"] is None and entries["spare"]["broker"] is False


def test_list_as_a_table_without_secrets(tmp_path):
    public = _project(tmp_path)
    code, out, _ = arbiter(tmp_path, "keys", "list")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip() and "key pairs" not in line}
    assert rows["web-client"] == ["web-client", public["web-client"], "no", "web-client"]
    assert rows["broker"] == ["broker", public["broker"], "yes", "broker"]
    assert rows["spare"] == ["spare", public["spare"], "yes", "-"]
    for path in (tmp_path / "keys").glob("*.key_secret"):
        assert zmq.auth.load_certificate(path)[1].decode() not in out


def test_list_shows_a_file_it_cannot_read(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "broken.key").write_text("nothing here\n")
    code, out, _ = arbiter(tmp_path, "keys", "list", "--json")
    assert code == 0
    [entry] = json.loads(out)
    assert entry["publicKey"] is None and entry["problem"] == "holds no CURVE public key"


def test_list_notes_a_security_file_with_errors(tmp_path):
    _project(tmp_path)
    (tmp_path / "configs" / "security.yaml").write_text("curve:\n  secret_key_file: keys/missing.key_secret\n")
    code, _, err = arbiter(tmp_path, "keys", "list")
    assert code == 0 and "1 error(s)" in err and "check-config" in err


def test_list_without_a_key_folder(tmp_path):
    code, out, err = arbiter(tmp_path, "keys", "list", "--json")
    assert code == 0 and json.loads(out) == [] and "keys new" in err
