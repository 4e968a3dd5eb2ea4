"""Cerberus schemas for plugin manifests and ``configs/*.yaml``, and located validation.

A validation error becomes ``path:line: field: message`` using the positions kept by
:mod:`arbiter.documents`. Unknown keys are split off as warnings: manifests in the wild carry
extra keys, and refusing them would make real ecosystems unloadable.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from cerberus import Validator, errors

from arbiter.dsl.diagnostics import Diagnostic
from arbiter.dsl.durations import DurationError, parse_ms
from arbiter.project.documents import Document

_STR_LIST = {"type": "list", "schema": {"type": "string"}}
_NAME = {"type": "string", "regex": r"^[A-Za-z0-9][A-Za-z0-9._-]*$"}
_NAME_LIST = {"type": "list", "schema": _NAME}
_MS = {"type": "integer", "min": 0}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": {"type": "string"},
    "name": {**_NAME, "required": True, "empty": False},
    "version": {"type": "string", "regex": r"^\d+(\.\d+){0,2}([-+][\w.\-]+)?$"},
    "apiVersion": {"type": "string", "allowed": ["v1"]},
    "description": {"type": "string"},
    "keywords": _STR_LIST,
    "author": {"type": ["string", "dict"]},
    "license": {"type": "string"},
    "homepage": {"type": "string"},
    "repository": {"type": ["string", "dict"]},
    "provides": {
        "type": "dict",
        "schema": {k: {"type": "integer", "min": 0} for k in ("agents", "commands", "skills")},
    },
    "capabilities": {
        "type": "dict",
        "schema": {k: _STR_LIST for k in ("domains", "contexts", "patterns", "integrations")},
    },
    "routing": {
        "type": "dict",
        "schema": {
            "priority": {"type": "integer", "min": 0, "max": 1000},
            "keywords": _STR_LIST,
            "contextPatterns": _STR_LIST,
            "acceptsRoutingFrom": {"type": "list", "schema": {"type": "string"}},
            "canRouteTo": {"type": "list", "schema": {"type": "string"}},
        },
    },
    "communication": {
        "type": "dict",
        "schema": {
            "messagebus": {
                "type": "dict",
                "schema": {"enabled": {"type": "boolean"}, "topics": _STR_LIST, "subscriptions": _STR_LIST},
            },
            "rpc": {
                "type": "dict",
                "schema": {
                    "enabled": {"type": "boolean"},
                    "endpoint": {"type": "string"},
                    "methods": _STR_LIST,
                },
            },
        },
    },
    "stateManagement": {
        "type": "dict",
        "schema": {
            "persistence": {
                "type": "dict",
                "schema": {
                    "type": {"type": "string", "allowed": ["sqlite", "postgres", "memory", "none"]},
                    "path": {"type": "string"},
                    "schema": {"type": "string"},
                },
            },
            "sharing": {"type": "dict", "schema": {"exports": _STR_LIST, "imports": _STR_LIST}},
        },
    },
    "orchestration": {
        "type": "dict",
        "schema": {
            "enabled": {"type": "boolean"},
            "mandatory": {"type": "boolean"},
            "protocol": {
                "type": "dict",
                "schema": {
                    "version": {"type": "string"},
                    "supportedPatterns": {
                        "type": "list",
                        "schema": {"type": "string", "allowed": ["sequential", "parallel", "conditional", "saga"]},
                    },
                },
            },
        },
    },
    "errorHandling": {
        "type": "dict",
        "schema": {
            "circuitBreaker": {
                "type": "dict",
                "schema": {
                    "enabled": {"type": "boolean"},
                    "threshold": {"type": "integer", "min": 1},
                    "timeout": _MS,
                    "halfOpenRetries": {"type": "integer", "min": 1},
                    "monitoringWindow": _MS,
                    "slowCallDuration": _MS,
                },
            },
            "retryPolicy": {
                "type": "dict",
                "schema": {
                    "maxRetries": {"type": "integer", "min": 0, "max": 100},
                    "backoff": {"type": "string", "allowed": ["linear", "exponential", "fibonacci"]},
                    "initialDelay": _MS,
                    "maxDelay": _MS,
                    "jitter": {"type": "number", "min": 0, "max": 1},
                    "retryableErrors": _STR_LIST,
                },
            },
            "fallback": {
                "type": "dict",
                "schema": {
                    "strategy": {"type": "string"},
                    "fallbackPlugin": _NAME,
                    "fallbackPlugins": _NAME_LIST,
                    "cacheableCommands": _STR_LIST,
                    "cacheTtl": _MS,
                },
            },
        },
    },
}

# Keys of Claude Code's own plugin.json: a plain plugin uses these and nothing of ours.
CLAUDE_MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": {"type": "string"},
    "name": {"type": "string", "required": True, "empty": False},
    "version": {"type": "string"},
    "description": {"type": "string"},
    "author": {"type": ["string", "dict"]},
    "homepage": {"type": "string"},
    "repository": {"type": ["string", "dict"]},
    "license": {"type": "string"},
    "keywords": {"type": ["list", "string"]},
    "capabilities": {"type": ["dict", "list"]},
    **{k: {} for k in ("commands", "agents", "skills", "hooks", "mcpServers", "outputStyles", "lspServers")},
}

_ENDPOINT = {"type": "string", "regex": r"^(tcp|ipc|inproc)://.+$"}


_ADDRESS = re.compile(r"^(?:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):)?([0-9]{1,5})$")


def metrics_address(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or a bare ``PORT`` (on 127.0.0.1) -> (host, port); a
    ``ValueError`` says what is wrong. The one reading of ``metrics.address`` and ``--metrics``."""
    found = _ADDRESS.match(address)
    if found is None:
        raise ValueError("expected HOST:PORT, [IPv6]:PORT or a PORT (on 127.0.0.1)")
    port = int(found.group(2))
    if not 0 < port < 65536:
        raise ValueError("the port must be from 1 to 65535")
    return (found.group(1) or "127.0.0.1").strip("[]"), port


def _metrics_address(field: str, value: Any, error: Any) -> None:
    if isinstance(value, str):
        try:
            metrics_address(value)
        except ValueError as exc:
            error(field, str(exc))


_METRICS_ADDRESS = {"type": "string", "check_with": _metrics_address}


def _duration(field: str, value: Any, error: Any) -> None:
    """A duration as people write it (``30d``, ``12h``), read as everywhere else in Arbiter."""
    if not isinstance(value, str):
        return  # null where allowed; any other type is the "type" rule's error
    try:
        parse_ms(value)
    except DurationError as exc:
        error(field, str(exc))


_DURATION = {"type": "string", "check_with": _duration}


def _off(value: Any) -> Any:
    """YAML reads a bare ``off`` as false: in a lint severity it means ``off``."""
    return "off" if value is False else value


CONFIG_SCHEMAS: dict[str, dict[str, Any]] = {
    "broker": {
        "endpoints": {
            "type": "dict",
            "default": {},
            "schema": {
                "frontend": {**_ENDPOINT, "default": "tcp://127.0.0.1:5555"},
                "events_pub": {**_ENDPOINT, "default": "tcp://127.0.0.1:5556"},
                "events_sub": {**_ENDPOINT, "default": "tcp://127.0.0.1:5557"},
            },
        },
        # Every broker of a deployment sharing one PostgreSQL store (docs/DEPLOYMENT.md): workers
        # connect to all, clients fail over along the list; empty: one broker, `endpoints`.
        "brokers": {
            "type": "list",
            "default": [],
            "schema": {
                "type": "dict",
                "schema": {
                    "name": {**_NAME, "required": True},
                    "frontend": {**_ENDPOINT, "required": True},
                    "events_pub": {**_ENDPOINT, "required": True},
                    "events_sub": {**_ENDPOINT, "required": True},
                },
            },
        },
        # How long a broker's hold on a chain run lasts unless renewed (renewed every third of it);
        # past it, another broker on the same PostgreSQL store takes the run over.
        "run_lease_ms": {"type": "integer", "min": 100, "default": 15_000},
        "heartbeat": {
            "type": "dict",
            "default": {},
            "schema": {
                "interval_ms": {"type": "integer", "min": 10, "default": 2500},
                "liveness": {"type": "integer", "min": 1, "default": 3},
            },
        },
        "limits": {
            "type": "dict",
            "default": {},
            "schema": {
                "max_message_bytes": {"type": "integer", "min": 1024, "default": 1_048_576},
                "client_inflight": {"type": "integer", "min": 1, "default": 100_000},
                "service_queue": {"type": "integer", "min": 1, "default": 100_000},
                "total_pending": {"type": "integer", "min": 1, "default": 200_000},
                "max_deliveries": {"type": "integer", "min": 1, "default": 3},
            },
        },
        "request_timeout_ms": {"type": "integer", "min": 1, "default": 30_000},
        # processes that make routing decisions off the loop: a count (0: on the loop) or "auto"
        "deciders": {
            "anyof": [{"type": "integer", "min": 0, "max": 64}, {"type": "string", "allowed": ["auto"]}],
            "default": "auto",
        },
        # idle: deciders use only cores nothing else wants; low: nice 10; normal: as the broker
        "decider_priority": {"type": "string", "allowed": ["idle", "low", "normal"], "default": "idle"},
        # processes serving arbiter.state (shared context, locks, the event log); 0: none
        "state_keepers": {"type": "integer", "min": 0, "max": 16, "default": 1},
        "dispatch": {
            "type": "dict",
            "default": {},
            "schema": {"attempt_timeout_ms": {"type": "integer", "min": 1, "default": 10_000}},
        },
        "reload": {
            "type": "dict",
            "default": {},
            "schema": {
                "watch": {"type": "boolean", "default": True},
                "debounce_ms": {"type": "integer", "min": 0, "default": 300},
            },
        },
        # Prometheus /metrics (docs/METRICS.md): HOST:PORT, [IPv6]:PORT or PORT (loopback); null: off
        "metrics": {
            "type": "dict",
            "default": {},
            "schema": {"address": {**_METRICS_ADDRESS, "nullable": True, "default": None}},
        },
    },
    "state": {
        "database": {"type": "string", "default": "sqlite:///.arbiter/state.db"},
        "batch_ms": {"type": "integer", "min": 0, "default": 50},
        # How long the routing-decision log keeps rows; null: no limit of that kind.
        "retention": {
            "type": "dict",
            "default": {},
            "schema": {
                "max_age": {**_DURATION, "nullable": True, "default": "30d"},
                "max_rows": {"type": "integer", "min": 1, "nullable": True, "default": 1_000_000},
            },
        },
        # How long the event log keeps events (oldest first); null: no limit of that kind.
        "event_retention": {
            "type": "dict",
            "default": {},
            "schema": {
                "max_age": {**_DURATION, "nullable": True, "default": "7d"},
                "max_rows": {"type": "integer", "min": 1, "nullable": True, "default": 5_000_000},
            },
        },
    },
    # What `arbiter demo` sends when it is given no text (none: the project's routing test cases).
    "demo": {"requests": {**_STR_LIST, "default": []}},
    "routing": {
        "weights": {
            "type": "dict",
            "default": {},
            "schema": {
                "domain": {"type": "number", "min": 0, "default": 30},
                "context": {"type": "number", "min": 0, "default": 20},
                "pattern": {"type": "number", "min": 0, "default": 15},
            },
        },
        "min_score": {"type": "number", "min": 0, "default": 0.0},
        "max_fallbacks": {"type": "integer", "min": 0, "max": 10, "default": 3},
        "coordinator": {"type": "string", "default": "jira-orchestrator"},
        "engine": {"type": "string", "allowed": ["auto", "durable", "python"], "default": "auto"},
        # How much of a request's text routing reads (classifier, rules, matcher, team): the first
        # this many characters, cut at a word boundary when one is near. 4,000 characters (about
        # 600 words, a page and a half) hold any request written to be routed with room to spare;
        # what follows is pasted material (logs, files) that adds no routing evidence, only time.
        "max_text_chars": {"type": "integer", "min": 100, "default": 4000},
        "capability_matrix": {
            "type": "dict",
            "default": {},
            "keysrules": {"type": "string"},
            "valuesrules": {"type": "dict", "keysrules": {"type": "string"}, "valuesrules": {"type": "number"}},
        },
    },
    # `arbiter lint`: a severity per code (error, warning, off; E001 stays an error; YAML reads a
    # bare `off` as false, which means off too) and the lowest severity that fails a run.
    "lint": {
        "severity": {
            "type": "dict",
            "default": {},
            "keysrules": {"type": "string", "regex": r"^[EW]\d{3}$"},
            "valuesrules": {"type": "string", "allowed": ["error", "warning", "off"], "coerce": _off},
        },
        "fail_level": {"type": "string", "allowed": ["error", "warning"], "default": "error"},
    },
    # CURVE keys and peer permissions; security is on when `curve` is there. The key files and
    # the permission rules (an identity's other keys) are checked by arbiter.security.
    "security": {
        "curve": {
            "type": "dict",
            "allow_unknown": True,  # reported by arbiter.security without quoting the line: it may hold a key
            "schema": {"secret_key_file": {"type": "string", "required": True, "empty": False}},
        },
        "identities": {
            "type": "dict",
            "default": {},
            "keysrules": _NAME,
            "valuesrules": {
                "type": "dict",
                "allow_unknown": True,
                "schema": {"public_key_file": {"type": "string", "required": True, "empty": False}},
            },
        },
    },
}


_validators = threading.local()


def validator_for(schema: dict[str, Any], allow_unknown: bool) -> Validator:
    """One validator per schema and thread, reused: building one checks the schema itself, which
    costs more than validating a manifest with it. Reused only on the thread that made it (a
    validator keeps the state of its last document), so the reloader's thread has its own."""
    made = getattr(_validators, "made", None)
    if made is None:
        made = _validators.made = {}
    key = (id(schema), allow_unknown)
    if key not in made:  # the schema is kept with it, so its id cannot be taken by another
        made[key] = (schema, Validator(schema, allow_unknown=allow_unknown))
    return made[key][1]


def _flatten(errs: Any) -> list[Any]:
    """Leaf errors only: cerberus nests errors of sub-documents inside group errors."""
    out: list[Any] = []
    for err in errs:
        if err.is_group_error:
            out.extend(_flatten(err.child_errors))
        else:
            out.append(err)
    return out


def _message(err: Any) -> str:
    if err.code == errors.UNKNOWN_FIELD.code:
        return "unknown key"
    handler = errors.BasicErrorHandler()
    return handler._format_message(err.field, err)


def validate(doc: Document, schema: dict[str, Any], code: str, unknown_code: str) -> tuple[Any, list[Diagnostic]]:
    """Validate and normalize ``doc.data``; return (normalized data or None, diagnostics).

    Unknown keys give one warning per file listing them all; every other problem is an error
    at the line of the offending key.
    """
    if not isinstance(doc.data, dict):
        got = "empty file" if doc.data is None else f"a {type(doc.data).__name__}"
        return None, [Diagnostic(doc.path, 1, 1, "error", code, f"expected a mapping at top level, got {got}")]
    # configs/security.yaml may hold key material pasted where it does not belong: its lines are
    # never quoted (the file, line and column still say where).
    secret = schema is CONFIG_SCHEMAS.get("security")

    def quoted(line: int) -> str | None:
        return None if secret else doc.line_text(line)

    validator = validator_for(schema, allow_unknown=False)
    ok = validator.validate(doc.data)
    diags: list[Diagnostic] = []
    unknown: list[tuple[Any, ...]] = []
    for err in _flatten(validator._errors):
        keypath = tuple(err.document_path)
        if err.code == errors.UNKNOWN_FIELD.code:
            unknown.append(keypath)
            continue
        line, col = doc.where(keypath)
        field = ".".join(str(p) for p in keypath) or "(top)"
        diags.append(
            Diagnostic(doc.path, line, col, "error", code, f"{field}: {_message(err)}", source_line=quoted(line))
        )
    if unknown:
        line, col = doc.where(unknown[0])
        names = ", ".join(".".join(str(p) for p in kp) for kp in unknown)
        diags.append(
            Diagnostic(
                doc.path,
                line,
                col,
                "warning",
                unknown_code,
                f"unknown keys ignored: {names}",
                source_line=quoted(line),
            )
        )
    if ok:  # validating normalized it already: defaults filled in
        return validator.document, diags
    if not any(d.severity == "error" for d in diags):
        # Normalize without unknown keys so defaults apply even when extra keys were present.
        lenient = validator_for(schema, allow_unknown=True)
        return lenient.normalized(doc.data) or dict(doc.data), diags
    return None, diags
