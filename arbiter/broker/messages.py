"""Arbiter's own services on the broker (``arbiter.route``, ``arbiter.explain``, ``arbiter.status``):
reading their requests and writing their replies.

The broker's loop does the socket work; what a request means and what a reply says is here, as
plain functions over envelopes, so it can be read and tested without sockets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import orjson

from arbiter.project.model import Component, Plugin
from arbiter.routing.text_index import terms
from arbiter.store.decisions import RowTemplate
from arbiter.wire import envelope as env

SOURCE = "arbiter"
ROUTE = "arbiter.route"
EXPLAIN = "arbiter.explain"
STATUS = "arbiter.status"
OWN_SERVICES = (ROUTE, EXPLAIN, STATUS)
RESERVED_PREFIXES = ("mmi.", "arbiter.")


class BadRequest(ValueError):
    """A request to one of our services that we cannot read; ``code`` goes into the error reply."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class RouteInput:
    """What ``arbiter.route`` and ``arbiter.explain`` read from the envelope's payload. Made once
    per request, so not frozen: a frozen dataclass costs four times as much to build."""

    envelope: dict[str, Any]
    text: str
    files: tuple[str, ...]
    caller: str | None
    command: str | None
    parameters: dict[str, Any]

    @property
    def cache_key(self) -> tuple[str, tuple[str, ...], str | None]:
        return (self.text, self.files, self.caller)


@dataclass(frozen=True)
class Decided:
    """A decision as the broker reuses it for every request with the same text: its JSON is
    encoded once, and each request splices in its own ``requestId`` (the first key)."""

    data: dict[str, Any]
    primary: str | None
    plan: tuple[str, ...]  # primary, then fallbacks in order
    collaborators: tuple[str, ...]
    tail: bytes  # the encoded decision after the requestId value
    row: RowTemplate  # its row in the decision log, converted once

    @classmethod
    def of(cls, data: dict[str, Any], row: RowTemplate) -> Decided:
        routing = data.get("routingDecision") or {}
        primary = routing.get("primaryPlugin")
        phases = (routing.get("collaborationPlan") or {}).get("phases") or []
        head = b'{"requestId":' + orjson.dumps(data["requestId"])
        encoded = orjson.dumps(data)
        if not encoded.startswith(head):
            raise ValueError("a decision's JSON must start with its requestId")
        plan = (primary, *routing.get("fallbackPlugins", ())) if primary else ()
        return cls(data, primary, plan, tuple(p["plugin"] for p in phases[1:]), encoded[len(head) :], row)

    def json_for(self, request_id: str) -> orjson.Fragment:
        """The decision as it reads for one request, ready to embed in a reply."""
        return orjson.Fragment(b'{"requestId":' + orjson.dumps(request_id) + self.tail)


def read_envelope(body: Sequence[bytes]) -> dict[str, Any]:
    if len(body) != 1:
        raise BadRequest("BAD_ENVELOPE", f"expected one body frame holding a JSON envelope, got {len(body)}")
    try:
        data = orjson.loads(body[0])
    except orjson.JSONDecodeError as exc:
        raise BadRequest("BAD_ENVELOPE", f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("payload", {}), dict):
        raise BadRequest("BAD_ENVELOPE", "the body must be a JSON object with an object 'payload'")
    return data


def read_route_input(body: Sequence[bytes]) -> RouteInput:
    envelope = read_envelope(body)
    payload = envelope.get("payload") or {}
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("BAD_REQUEST", "payload.text must be a non-empty string (the request to route)")
    files = payload.get("files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise BadRequest("BAD_REQUEST", "payload.files must be a list of path strings")
    command = payload.get("command")
    if command is not None and not isinstance(command, str):
        raise BadRequest("BAD_REQUEST", "payload.command must be a string")
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("BAD_REQUEST", "payload.parameters must be an object")
    caller = payload.get("from") or payload.get("caller")
    return RouteInput(envelope, text, tuple(files), caller if isinstance(caller, str) else None, command, parameters)


def invocable(plugin: Plugin) -> tuple[Component, ...]:
    """What a routed request can ask a plugin's worker to run: its commands; a plugin that
    declares none (many plain Claude Code plugins only ship skills or agents) is asked by the
    name of a skill, else of an agent."""
    return plugin.commands or plugin.skills or plugin.agents


def choose_command(plugin: Plugin, text: str) -> str | None:
    """The plugin command whose name, description and keywords best share the request's terms.

    A routed request need not name a command; the worker still needs one. Terms are weighed by
    how few of the plugin's commands use them, so "model" in "add a Beanie model" counts for
    more than "add", which half the commands start with."""
    wanted = set(terms(text))
    vocab = {
        c.name: set(terms(" ".join((c.name.replace("-", " "), c.description, *c.keywords)))) for c in invocable(plugin)
    }
    if not vocab:
        return None
    count = len(vocab)
    frequency: dict[str, int] = {}
    for words in vocab.values():
        for word in words & wanted:
            frequency[word] = frequency.get(word, 0) + 1

    def score(name: str) -> float:
        return sum(math.log(1 + count / frequency[w]) for w in vocab[name] & wanted)

    return max(vocab, key=lambda name: (score(name), -list(vocab).index(name)))


def dispatch_body(
    route: RouteInput, plugin: str, command: str, request_id: str, collaborators: Sequence[str], retry_count: int = 0
) -> bytes:
    """The request the chosen plugin's worker receives: the caller's envelope, re-addressed.

    The messageId stays, so a client's retry is recognised as a duplicate by the worker;
    ``metadata.retryCount`` says how many dispatches of this request came before."""
    original = route.envelope
    out = {
        **original,
        "messageId": original.get("messageId") or env.new_id(),
        "correlationId": original.get("correlationId") or original.get("messageId"),
        "timestamp": original.get("timestamp") or env.iso(env.utc_now()),
        "source": original.get("source") or SOURCE,
        "destination": plugin,
        "topic": f"plugin/{plugin}/request",
        "messageType": "request",
        "payload": {
            "command": command,
            "parameters": route.parameters,
            "context": {
                **((original.get("payload") or {}).get("context") or {}),
                "text": route.text,
                "files": list(route.files),
                "requestId": request_id,
                "collaborators": list(collaborators),
            },
        },
        "metadata": {**(original.get("metadata") or {}), "retryCount": retry_count},
    }
    return orjson.dumps(out)


@dataclass(slots=True)
class WorkerAnswer:
    """A worker's reply, read once: its envelope (None for a plain body) and what it says (not
    frozen, as :class:`RouteInput`)."""

    body: Sequence[bytes]
    envelope: dict[str, Any] | None
    error_code: str | None
    error_message: str

    @classmethod
    def read(cls, body: Sequence[bytes]) -> WorkerAnswer:
        envelope = env.as_envelope(body[0]) if len(body) == 1 else None
        payload = (envelope or {}).get("payload") or {}
        if payload.get("status") != "error":
            return cls(body, envelope, None, "")
        error = payload.get("error") or {}
        return cls(body, envelope, str(error.get("code") or "ERROR"), str(error.get("message") or ""))

    @property
    def result(self) -> Any:
        if self.envelope is None:
            return b"".join(self.body).decode("utf-8", "replace")
        return (self.envelope.get("payload") or {}).get("result")


def routed_reply(
    route: RouteInput,
    plugin: str,
    command: str,
    decision: Any,
    answer: WorkerAnswer,
    steps: Sequence[Mapping[str, Any]] = (),
    degraded: bool = False,
) -> bytes:
    """The client's answer: the worker's result (or error), the decision, and how it was reached."""
    outcome: dict[str, Any] = {"plugin": plugin, "command": command, "decision": decision, "result": answer.result}
    if steps:
        outcome["steps"] = list(steps)
        outcome["degraded"] = degraded
    if answer.error_code is None:
        return orjson.dumps(env.success_reply(route.envelope, SOURCE, outcome))
    reply = env.error_reply(route.envelope, SOURCE, "PLUGIN_ERROR", "the plugin's worker answered with an error")
    reply["payload"]["error"]["plugin"] = (answer.envelope or {}).get("payload", {}).get("error")
    reply["payload"]["result"] = outcome
    return orjson.dumps(reply)


def error_body(request: Sequence[bytes] | Mapping[str, Any] | None, code: str, message: str, **extra: Any) -> bytes:
    """A broker error envelope answering ``request`` (an envelope, raw body frames, or nothing)."""
    original: Mapping[str, Any] = {}
    if isinstance(request, Mapping):
        original = request
    elif request and len(request) == 1:
        original = env.as_envelope(request[0]) or {}
    reply = env.error_reply(original, SOURCE, code, message)
    reply["payload"]["error"].update(extra)
    return orjson.dumps(reply)


def success_body(request: Mapping[str, Any], result: Any) -> bytes:
    return orjson.dumps(env.success_reply(request, SOURCE, result))
