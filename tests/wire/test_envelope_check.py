"""Envelope checking: each field the seed defines, when present, has its type; a reply can be
built for any request whatever its fields hold."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbiter.broker import messages
from arbiter.wire import envelope as env

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
FIELDS = ("messageId", "correlationId", "timestamp", "source", "priority", "headers", "payload", "metadata")


def test_a_well_formed_request_passes_unchanged():
    request = env.new_request("svc", "work", {"a": 1})
    assert env.check(request) is request


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("headers", "trace", "headers: must be an object, not a string"),
        ("headers", [1], "headers: must be an object, not an array"),
        ("metadata", "soon", "metadata: must be an object, not a string"),
        ("priority", True, "priority: must be an integer, not a boolean"),
        ("payload", [], "payload: must be an object, not an array"),
        ("messageId", 7, "messageId: must be a string, not a number"),
    ],
)
def test_the_first_wrong_field_is_named(field, value, named):
    request = {**env.new_request("svc", "work"), field: value}
    with pytest.raises(env.EnvelopeError) as caught:
        env.check(request)
    assert str(caught.value) == named and caught.value.field == field


def test_nested_fields_are_checked():
    request = env.new_request("svc", "work")
    request["headers"]["traceId"] = {"nested": True}
    with pytest.raises(env.EnvelopeError, match=r"^headers\.traceId: "):
        env.check(request)
    request = env.new_request("svc", "work")
    request["metadata"]["expiresAt"] = "tomorrow"
    with pytest.raises(env.EnvelopeError, match=r"^metadata\.expiresAt: must be an ISO-8601 time"):
        env.check(request)
    request["metadata"] = {"retryCount": -1}
    with pytest.raises(env.EnvelopeError, match=r"^metadata\.retryCount"):
        env.check(request)


def test_a_body_that_breaks_the_check_is_not_taken_for_an_envelope():
    request = {**env.new_request("svc", "work"), "metadata": []}
    assert env.as_envelope(orjson.dumps(request)) is None  # passed on as plain bytes


@given(st.sampled_from(FIELDS), json_values)
def test_an_error_reply_can_be_built_for_any_request(field, value):
    request = {**env.new_request("svc", "work"), field: value}
    reply = orjson.loads(messages.error_body(request, "BAD_ENVELOPE", "x"))
    assert reply["payload"]["error"]["code"] == "BAD_ENVELOPE"
    assert isinstance(reply["headers"], dict) and isinstance(reply["priority"], int)
    frames = [orjson.dumps(request)]
    assert orjson.loads(messages.error_body(frames, "EXPIRED", "x"))["payload"]["status"] == "error"
    env.mark_retry(request)  # a retry of any request can be counted
    assert request["metadata"]["retryCount"] >= 1


@given(st.sampled_from(("text", "files", "command", "parameters", "context", "from")), json_values)
def test_route_input_names_any_wrong_payload_field(field, value):
    request = env.new_request("arbiter.route", "work")
    request["payload"] = {"text": "deploy the api", field: value}
    try:
        route = messages.read_route_input([orjson.dumps(request)])
    except messages.BadRequest as exc:
        assert exc.code in ("BAD_REQUEST", "BAD_ENVELOPE")
        assert field in str(exc) or field == "from" and "payload.from" in str(exc)
    else:
        assert isinstance(route.text, str) and all(isinstance(f, str) for f in route.files)
        assert isinstance(route.parameters, dict) and (route.caller is None or isinstance(route.caller, str))
