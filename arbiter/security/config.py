"""``configs/security.yaml`` read into :class:`Security`: the broker's CURVE keys and, per peer
identity, its public key and what it may serve, call, publish and subscribe to.

Security is on when the file has a ``curve`` section. The file's shape is validated with the
other configs (:data:`arbiter.project.schemas.CONFIG_SCHEMAS`); :func:`load_security` checks
what a schema cannot: the key files, one key per identity, the permission rules. Every problem
is a Diagnostic at its line, and a part with a problem grants nothing (fail closed).

Key material never leaves here in text: ``repr``, :meth:`Security.to_json` and messages show
names, public keys and rules, never a secret key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from arbiter.dsl.diagnostics import Diagnostic, did_you_mean
from arbiter.project.configs import config_files
from arbiter.project.documents import Document, DocumentError, KeyPath, read_document
from arbiter.project.snapshot import Snapshot
from arbiter.security.keyfiles import KeyFileError, KeyPair, read_key_file, readable_by_others, well_formed
from arbiter.security.permissions import SERVICE_SEPARATOR, TOPIC_SEPARATOR, Rule, pattern_problem

SECURITY_FILE = "security"  # configs/security.yaml
KEY_ERROR, RULE_ERROR, SECURITY_WARNING = "E060", "E061", "W060"
# Each permission kind and the separator of the names it is about.
KINDS: Mapping[str, str] = MappingProxyType(
    {"serve": SERVICE_SEPARATOR, "call": SERVICE_SEPARATOR, "publish": TOPIC_SEPARATOR, "subscribe": TOPIC_SEPARATOR}
)
RULE_KEYS = ("allow", "deny")


@dataclass(frozen=True)
class Identity:
    """A peer known by its CURVE public key (Z85, 40 characters) and what it may do."""

    name: str
    public_key: bytes
    serve: Rule = Rule()
    call: Rule = Rule()
    publish: Rule = Rule()
    subscribe: Rule = Rule()

    def to_json(self) -> dict[str, Any]:
        rules = {kind: getattr(self, kind).to_json() for kind in KINDS}
        return {"name": self.name, "publicKey": self.public_key.decode("ascii"), **rules}


@dataclass(frozen=True)
class Security:
    """The broker's keys and the identities of its peers. ``secret_key`` is shown nowhere.

    The ``may_*`` answers come from the rules alone: an unknown identity may do nothing. The
    broker consults them when ``enabled``.
    """

    enabled: bool
    public_key: bytes | None = None
    secret_key: bytes | None = field(default=None, repr=False)
    identities: Mapping[str, Identity] = field(default_factory=lambda: MappingProxyType({}))
    by_key: Mapping[bytes, Identity] = field(default_factory=lambda: MappingProxyType({}))

    def __repr__(self) -> str:
        key = self.public_key.decode("ascii") if self.public_key else None
        return f"Security(enabled={self.enabled}, public_key={key!r}, identities={sorted(self.identities)!r})"

    def identity_of(self, public_key: bytes) -> Identity | None:
        return self.by_key.get(public_key)

    def _rule(self, name: str, kind: str) -> Rule | None:
        identity = self.identities.get(name)
        return None if identity is None else getattr(identity, kind)

    def _may(self, name: str, kind: str, subject: str) -> bool:
        rule = self._rule(name, kind)
        return rule is not None and rule.permits(subject, KINDS[kind])

    def may_serve(self, name: str, service: str) -> bool:
        return self._may(name, "serve", service)

    def may_call(self, name: str, service: str) -> bool:
        return self._may(name, "call", service)

    def may_publish(self, name: str, topic: str) -> bool:
        return self._may(name, "publish", topic)

    def may_subscribe(self, name: str, subscription: str) -> bool:
        """A subscription (a topic prefix or a wildcard pattern) is granted only when every topic
        it can deliver may be read (:meth:`Rule.grants_subscription`)."""
        rule = self._rule(name, "subscribe")
        return rule is not None and rule.grants_subscription(subscription)

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "publicKey": self.public_key.decode("ascii") if self.public_key else None,
            "identities": [identity.to_json() for identity in self.identities.values()],
        }


DISABLED = Security(enabled=False)
# What a security file with errors in its shape yields: on, with no keys and nobody known.
LOCKED = Security(enabled=True)


@dataclass
class _Report:
    """Diagnostics of one file, placed by key path when the file's positions are known."""

    path: str
    doc: Document | None
    found: list[Diagnostic] = field(default_factory=list)

    def add(
        self, keypath: KeyPath, code: str, message: str, hint: str, severity: str = "error", quote: bool = True
    ) -> None:
        """Report at ``keypath``; ``quote=False`` leaves the line out (it may hold key material)."""
        line, col = self.doc.where(keypath) if self.doc else (1, 1)
        source = self.doc.line_text(line) if self.doc and quote else ""
        self.found.append(Diagnostic(self.path, line, col, severity, code, message, hint, source))


def _document(root: Path, source_path: str) -> Document | None:
    path = Path(source_path)
    try:
        return read_document(path if path.is_absolute() else root / path)
    except (DocumentError, OSError):
        return None


def _looks_like_key(value: Any) -> bool:
    """Whether a value written in the file is a CURVE key itself, which no message may quote."""
    return isinstance(value, str) and well_formed(value.encode("utf-8", "replace"))


def _read_key(root: Path, raw: Any, keypath: KeyPath, report: _Report) -> tuple[str, KeyPair] | None:
    """The key pair in the file ``raw`` names (relative to the project), or None, reported."""
    if not isinstance(raw, str) or not raw or "\0" in raw:
        report.add(keypath, KEY_ERROR, f"{keypath[-1]} must name a key file", f"e.g. {keypath[-1]}: keys/NAME.key")
        return None
    if not (root / raw).exists() and _looks_like_key(raw):
        hint = "name a key file made by `arbiter keys new NAME`; if this was a secret key, make a new pair"
        report.add(keypath, KEY_ERROR, f"{keypath[-1]} holds what looks like a key, not a file name", hint, quote=False)
        return None
    try:
        return raw, read_key_file(root / raw)
    except KeyFileError as exc:
        report.add(keypath, KEY_ERROR, f"{raw}: {exc.message}", exc.hint)
        return None


def _broker_keys(root: Path, curve: Any, report: _Report) -> tuple[bytes | None, bytes | None]:
    if not isinstance(curve, Mapping):
        hint = "curve: {secret_key_file: keys/broker.key_secret}"
        report.add(("curve",), KEY_ERROR, "curve must be a mapping", hint)
        return None, None
    keypath = ("curve", "secret_key_file")
    for key in curve:
        if key != "secret_key_file":  # never quoted: someone may have pasted a key here
            hint = "curve takes secret_key_file only; keys belong in key files (`arbiter keys new NAME`)"
            report.add(("curve", key), KEY_ERROR, f"unknown key {str(key)!r} in curve", hint, quote=False)
    if "secret_key_file" not in curve:
        hint = "`arbiter keys new broker`, then secret_key_file: keys/broker.key_secret"
        report.add(("curve",), KEY_ERROR, "curve needs secret_key_file", hint)
        return None, None
    read = _read_key(root, curve["secret_key_file"], keypath, report)
    if read is None:
        return None, None
    name, pair = read
    if pair.secret is None:
        stem = name.removesuffix(".key")
        hint = f"name the pair's secret file ({stem}.key_secret); the public one is what peers get"
        report.add(keypath, KEY_ERROR, f"{name} holds only a public key; the broker needs its secret key", hint)
        return None, None
    mode = readable_by_others(root / name)
    if mode is not None:
        message = f"{name} may be read by other users (mode {mode:04o})"
        report.add(keypath, SECURITY_WARNING, message, f"chmod 600 {name}", "warning")
    return pair.public, pair.secret


def _patterns(raw: Any, keypath: KeyPath, separator: str, report: _Report) -> tuple[str, ...] | None:
    """A rule's allow or deny list, or None when any of it is wrong (reported)."""
    if raw is None:
        return ()
    if not isinstance(raw, (list, tuple)):
        hint = f'a list, even of one: {keypath[-1]}: ["{raw}"]'
        report.add(keypath, RULE_ERROR, f"{keypath[-1]} must be a list of patterns", hint)
        return None
    ok = True
    for index, pattern in enumerate(raw):
        problem = pattern_problem(pattern, separator)
        if problem is not None:
            report.add((*keypath, index), RULE_ERROR, *problem)
            ok = False
    return tuple(raw) if ok else None


def _rule(raw: Any, keypath: KeyPath, separator: str, report: _Report) -> Rule:
    """One permission kind's rule; nothing allowed when it is missing or has a problem."""
    kind = keypath[-1]
    if raw is None:
        return Rule()
    if not isinstance(raw, Mapping):
        report.add(keypath, RULE_ERROR, f"{kind} must be a mapping", f"{kind}: {{allow: [...], deny: [...]}}")
        return Rule()
    unknown = [key for key in raw if key not in RULE_KEYS]
    for key in unknown:
        hint = did_you_mean(str(key), RULE_KEYS) or "a rule has allow and deny"
        report.add((*keypath, key), RULE_ERROR, f"unknown key {key!r} in the {kind} rule", hint)
    allow = _patterns(raw.get("allow"), (*keypath, "allow"), separator, report)
    deny = _patterns(raw.get("deny"), (*keypath, "deny"), separator, report)
    if unknown or allow is None or deny is None:
        return Rule()
    return Rule(allow, deny)


def _identity(root: Path, name: str, raw: Any, report: _Report) -> Identity | None:
    keypath: KeyPath = ("identities", name)
    if not isinstance(raw, Mapping):
        hint = f"{name}: {{public_key_file: keys/{name}.key, call: {{allow: [...]}}}}"
        report.add(keypath, RULE_ERROR, f"identity {name!r} must be a mapping", hint)
        return None
    for key in raw:
        if key != "public_key_file" and key not in KINDS:
            hint = did_you_mean(str(key), KINDS) or f"permission kinds: {', '.join(KINDS)}"
            quote = not _looks_like_key(raw[key])
            report.add((*keypath, key), RULE_ERROR, f"unknown permission kind {key!r}", hint, quote=quote)
    rules = {kind: _rule(raw.get(kind), (*keypath, kind), separator, report) for kind, separator in KINDS.items()}
    if "public_key_file" not in raw:
        hint = f"`arbiter keys new {name}` makes keys/{name}.key"
        report.add(keypath, KEY_ERROR, f"identity {name!r} needs public_key_file", hint)
        return None
    read = _read_key(root, raw["public_key_file"], (*keypath, "public_key_file"), report)
    if read is None:
        return None
    file, pair = read
    if pair.secret is not None:
        stem = file.removesuffix(".key_secret")
        hint = f"name the public file ({stem}.key); the secret one stays with the peer"
        report.add((*keypath, "public_key_file"), KEY_ERROR, f"{file} is a secret key file", hint)
        return None
    return Identity(name, pair.public, **rules)


def _identities(root: Path, raw: Any, report: _Report) -> tuple[dict[str, Identity], dict[bytes, Identity]]:
    if raw is None:
        return {}, {}
    if not isinstance(raw, Mapping):
        hint = "identities: {NAME: {public_key_file: keys/NAME.key}}"
        report.add(("identities",), RULE_ERROR, "identities must be a mapping of names", hint)
        return {}, {}
    identities: dict[str, Identity] = {}
    by_key: dict[bytes, Identity] = {}
    for name, entry in raw.items():
        identity = _identity(root, str(name), entry, report)
        if identity is None:
            continue
        other = by_key.get(identity.public_key)
        if other is not None:
            message = f"identities {other.name!r} and {identity.name!r} have the same public key"
            hint = "each peer needs its own key pair: `arbiter keys new NAME`"
            report.add(("identities", identity.name, "public_key_file"), KEY_ERROR, message, hint)
            continue
        identities[identity.name] = by_key[identity.public_key] = identity
    return identities, by_key


def load_security(root: Path, data: Mapping[str, Any] | None, source_path: str) -> tuple[Security, list[Diagnostic]]:
    """The security settings in ``data`` (the parsed ``source_path``), key files read from under
    ``root``; problems are diagnostics placed in ``source_path``."""
    if not data:
        return DISABLED, []
    report = _Report(source_path, _document(Path(root), source_path))
    if not isinstance(data, Mapping):
        report.add((), RULE_ERROR, "expected a mapping at top level", "see docs/SECURITY.md")
        return LOCKED, report.found
    enabled = "curve" in data
    public, secret = _broker_keys(Path(root), data["curve"], report) if enabled else (None, None)
    identities, by_key = _identities(Path(root), data.get("identities"), report)
    if identities and not enabled:
        hint = "add curve: {secret_key_file: keys/broker.key_secret} to turn security on"
        message = "identities have no effect without a curve section"
        report.add(("identities",), SECURITY_WARNING, message, hint, "warning")
    security = Security(enabled, public, secret, MappingProxyType(identities), MappingProxyType(by_key))
    return security, report.found


def security_file(config_dir: Path) -> Path | None:
    """``configs/security.yaml`` (or ``.yml``) when the project has one."""
    return next((path for path in config_files(config_dir) if path.stem == SECURITY_FILE), None)


def security_of(snapshot: Snapshot) -> tuple[Security, list[Diagnostic]]:
    """The snapshot's security settings and their problems beyond the snapshot's own.

    A security file whose shape is wrong is among the snapshot's errors, and yields security on
    with nobody known rather than security off.
    """
    path = security_file(snapshot.project.config_dir)
    if path is None:
        return DISABLED, []
    if any(d.severity == "error" and d.path == str(path) for d in snapshot.diagnostics):
        return LOCKED, []
    return load_security(snapshot.project.root, snapshot.configs.get(SECURITY_FILE), str(path))
