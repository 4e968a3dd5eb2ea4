"""configs/security.yaml: a good file loads; each problem is a diagnostic at its line with a hint;
no secret key ever shows in a repr, JSON or message; check-config fails on errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import zmq
import zmq.auth
from arbiter.dsl.diagnostics import Diagnostic
from click.testing import CliRunner

from arbiter.cli import main
from arbiter.project.snapshot import build_snapshot
from arbiter.security.config import DISABLED, Security, load_security, security_of

PEERS = ("broker", "billing-worker", "web-client")

GOOD = """\
curve:
  secret_key_file: keys/broker.key_secret
identities:
  billing-worker:
    public_key_file: keys/billing-worker.key
    serve: {allow: [fastapi-backend]}
  web-client:
    public_key_file: keys/web-client.key
    call: {allow: [arbiter.route, arbiter.status]}
    subscribe: {allow: ["routing/**"], deny: ["routing/internal/**"]}
"""


def arbiter(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project with a key pair for the broker and two peers, made as a user would."""
    for name in PEERS:
        code, _, err = arbiter("--root", str(tmp_path), "keys", "new", name)
        assert code == 0, err
    (tmp_path / "configs").mkdir()
    return tmp_path


def load(root: Path, text: str) -> tuple[Security, list[Diagnostic]]:
    (root / "configs" / "security.yaml").write_text(textwrap.dedent(text))
    snapshot = build_snapshot(root)
    security, found = security_of(snapshot)
    return security, [*snapshot.diagnostics, *found]


def secrets(root: Path) -> list[str]:
    return [zmq.auth.load_certificate(path)[1].decode() for path in sorted((root / "keys").glob("*.key_secret"))]


def public_key(root: Path, name: str) -> bytes:
    return zmq.auth.load_certificate(root / "keys" / f"{name}.key")[0]


def test_a_good_file_loads(root):
    security, found = load(root, GOOD)
    assert found == []
    assert security.enabled
    assert security.public_key == public_key(root, "broker")
    assert security.secret_key == zmq.auth.load_certificate(root / "keys/broker.key_secret")[1]
    assert sorted(security.identities) == ["billing-worker", "web-client"]
    web = security.identity_of(public_key(root, "web-client"))
    assert web is not None and web.name == "web-client"
    assert security.identity_of(public_key(root, "broker")) is None


@pytest.mark.parametrize(
    ("ask", "expected"),
    [
        (("may_serve", "billing-worker", "fastapi-backend"), True),
        (("may_serve", "web-client", "fastapi-backend"), False),  # no serve rule: default deny
        (("may_call", "web-client", "arbiter.route"), True),
        (("may_call", "web-client", "arbiter.chain"), False),
        (("may_call", "billing-worker", "arbiter.route"), False),
        (("may_subscribe", "web-client", "routing/decisions"), True),
        (("may_subscribe", "web-client", "routing/internal/audit"), False),  # deny wins
        (("may_publish", "web-client", "routing/decisions"), False),
        (("may_call", "nobody", "arbiter.route"), False),  # an unknown identity may do nothing
    ],
)
def test_permissions_of_a_good_file(root, ask, expected):
    security, _ = load(root, GOOD)
    method, name, subject = ask
    assert getattr(security, method)(name, subject) is expected


def _garbage_keys(root: Path) -> None:
    """Key files that are wrong in each way a hand-made or mixed-up file can be."""
    keys = root / "keys"
    (keys / "garbage.key").write_text("not a certificate\n")
    (keys / "short.key").write_text('curve\n    public-key = "tooshort"\n')
    broker_public = zmq.auth.load_certificate(keys / "broker.key")[0].decode()
    other_secret = zmq.curve_keypair()[1].decode()
    (keys / "mixed.key_secret").write_text(
        f'curve\n    public-key = "{broker_public}"\n    secret-key = "{other_secret}"\n'
    )


PEER = "curve:\n  secret_key_file: keys/broker.key_secret\nidentities:\n  web-client:\n"
PROBLEMS = [
    # the file, the line and column of the diagnostic, words of its message, words of its hint
    ("curve:\n  secret_key_file: keys/nowhere.key_secret\n", 2, 3, "keys/nowhere.key_secret: no such file", "keys new"),
    ("curve:\n  secret_key_file: keys/broker.key\n", 2, 3, "holds only a public key", "broker.key_secret"),
    ("curve:\n  secret_key_file: keys/mixed.key_secret\n", 2, 3, "does not belong to its public key", "keys new"),
    (PEER + "    public_key_file: keys/nowhere.key\n", 5, 5, "keys/nowhere.key: no such file", "keys new"),
    (PEER + "    public_key_file: keys/garbage.key\n", 5, 5, "holds no CURVE public key", "keys new"),
    (PEER + "    public_key_file: keys/short.key\n", 5, 5, "malformed public key", "keys new"),
    (PEER + "    public_key_file: keys\n", 5, 5, "keys: is a directory", "keys new"),
    (PEER + "    public_key_file: keys/web-client.key_secret\n", 5, 5, "is a secret key file", "web-client.key"),
    (
        PEER + "    public_key_file: keys/web-client.key\n  twin:\n    public_key_file: keys/web-client.key\n",
        7,
        5,
        "identities 'web-client' and 'twin' have the same public key",
        "its own key pair",
    ),
    (
        PEER + "    public_key_file: keys/web-client.key\n    cal: {allow: [a]}\n",
        6,
        5,
        "unknown permission kind 'cal'",
        "did you mean 'call'?",
    ),
    (
        PEER + "    public_key_file: keys/web-client.key\n    subscribe:\n      allow: [routing/ok, routing.**]\n",
        7,
        27,
        "'**' inside the token 'routing.**'",
        "'/'-separated",
    ),
    (
        PEER + "    public_key_file: keys/web-client.key\n    call: {allow: [arbiter..route]}\n",
        6,
        20,
        "empty token",
        "'.'",
    ),
    (
        PEER + f"    public_key_file: keys/web-client.key\n    call:\n      deny: [{'a' * 300}]\n",
        7,
        14,
        "pattern of 300 characters",
        "wildcards",
    ),
    (
        PEER + "    public_key_file: keys/web-client.key\n    call: {allow: arbiter.route}\n",
        6,
        12,
        "allow must be a list",
        '["arbiter.route"]',
    ),
    (
        PEER + "    public_key_file: keys/web-client.key\n    call: [arbiter.route]\n",
        6,
        5,
        "call must be a mapping",
        "allow",
    ),
    (
        PEER + "    public_key_file: keys/web-client.key\n    call: {alow: [x]}\n",
        6,
        12,
        "unknown key 'alow'",
        "did you mean 'allow'?",
    ),
]


@pytest.mark.parametrize(("text", "line", "col", "words", "hint"), PROBLEMS)
def test_each_problem_is_a_diagnostic_at_its_line(root, text, line, col, words, hint):
    _garbage_keys(root)
    _, found = load(root, text)
    errors = [d for d in found if d.severity == "error"]
    assert len(errors) == 1, [d.format() for d in found]
    diag = errors[0]
    assert diag.path.endswith("security.yaml")
    assert (diag.line, diag.col) == (line, col), diag.format()
    assert words in diag.message and hint in diag.hint, diag.format()
    assert diag.source_line == text.splitlines()[line - 1]
    for secret in secrets(root):
        assert secret not in diag.format() and secret not in json.dumps(diag.to_json())


def test_a_part_with_a_problem_grants_nothing(root):
    text = GOOD.replace('deny: ["routing/internal/**"]', 'deny: ["routing/internal/**", "routing.x.**"]')
    security, found = load(root, text)
    assert [d.line for d in found] == [10]
    assert not security.may_subscribe("web-client", "routing/decisions")  # the whole rule is void
    assert security.may_call("web-client", "arbiter.route")  # the identity's other rules stand


def test_a_file_of_the_wrong_shape_locks_rather_than_opens(root):
    security, found = load(root, "curve: keys/broker.key_secret\n")
    assert [(d.code, d.line) for d in found] == [("E020", 1)]
    assert security.enabled and not security.identities and security.secret_key is None


def test_identities_without_curve_are_a_warning(root):
    security, found = load(root, GOOD.split("identities:")[1].join(["identities:", ""]))
    assert not security.enabled
    assert [(d.severity, d.code, d.line) for d in found] == [("warning", "W060", 1)]
    assert "no effect without a curve section" in found[0].message


def test_no_file_or_no_data_means_no_security(root):
    assert security_of(build_snapshot(root)) == (DISABLED, [])
    assert load_security(root, None, "configs/security.yaml") == (DISABLED, [])


def test_a_secret_key_others_may_read_is_a_warning(root):
    (root / "keys" / "broker.key_secret").chmod(0o644)
    _, found = load(root, GOOD)
    assert [(d.severity, d.line) for d in found] == [("warning", 2)]
    assert "mode 0644" in found[0].message and found[0].hint == "chmod 600 keys/broker.key_secret"


def test_secrets_never_show(root):
    security, _ = load(root, GOOD)
    shown = [repr(security), str(security), json.dumps(security.to_json())]
    shown += [repr(identity) for identity in security.identities.values()]
    shown += [json.dumps(identity.to_json()) for identity in security.identities.values()]
    for secret in secrets(root):
        assert all(secret not in text for text in shown)
    assert security.public_key.decode() in repr(security)
    assert security.to_json()["identities"][1]["subscribe"] == {
        "allow": ["routing/**"],
        "deny": ["routing/internal/**"],
    }


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("curve:\n  secret_key_file: '{secret}'\n", 2, "secret_key_file holds what looks like a key, not a file name"),
        (
            "curve:\n  secret_key_file: keys/broker.key_secret\n  secret_key: '{secret}'\n",
            3,
            "unknown key 'secret_key' in curve",
        ),
        (PEER + "    public_key_file: '{secret}'\n", 5, "public_key_file holds what looks like a key"),
        (
            PEER + "    public_key_file: keys/web-client.key\n    secret_key: '{secret}'\n",
            6,
            "unknown permission kind 'secret_key'",
        ),
    ],
)
def test_a_key_pasted_into_the_file_is_not_quoted(root, text, line, words):
    secret = secrets(root)[0]
    _, found = load(root, text.format(secret=secret))
    assert [(d.severity, d.line) for d in found] == [("error", line)]
    assert words in found[0].message and found[0].hint
    assert found[0].source_line == ""
    assert secret not in found[0].format() and secret not in json.dumps(found[0].to_json())
    code, out, _ = arbiter("--root", str(root), "check-config")
    assert code == 1 and secret not in out


def test_check_config_passes_a_good_file(root):
    load(root, GOOD)
    code, out, _ = arbiter("--root", str(root), "check-config")
    assert code == 0, out
    assert "configuration ok" in out


@pytest.mark.parametrize("as_json", [False, True])
def test_check_config_fails_on_a_bad_file(root, as_json):
    load(root, GOOD.replace("keys/web-client.key", "keys/web-client.key_secret"))
    code, out, _ = arbiter("--root", str(root), "check-config", *(["--json"] if as_json else []))
    assert code == 1
    if as_json:
        data = json.loads(out)
        assert data["ok"] is False
        assert [(d["code"], d["line"]) for d in data["diagnostics"]] == [("E060", 8)]
    else:
        assert "security.yaml:8:5: error[E060]: keys/web-client.key_secret is a secret key file" in out
        assert "hint: name the public file (keys/web-client.key)" in out
        assert "1 error(s)" in out and "configuration FAILED" in out
    for secret in secrets(root):
        assert secret not in out


def test_a_key_pasted_among_the_files_keys_is_never_quoted(tmp_path: Path) -> None:
    from arbiter.project.configs import load_configs

    pasted = "SUPERSECRETKEYMATERIAL1234567890abcdefgh"
    (tmp_path / "security.yaml").write_text(f'curve:\n  secret_key_file: 7\nsecret: "{pasted}"\n')
    _, diagnostics = load_configs(tmp_path)
    shown = "\n".join(d.format() for d in diagnostics)
    assert "security.yaml:3:1" in shown and "unknown keys ignored: secret" in shown
    assert pasted not in shown and diagnostics
