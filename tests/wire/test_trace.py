"""W3C Trace Context: reading and writing ``traceparent`` and ``tracestate`` (arbiter/wire/trace.py),
and the envelope's trace headers."""

from __future__ import annotations

import pytest

from arbiter.wire import envelope as env
from arbiter.wire import trace

GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_read() -> None:
    parent = trace.parse_traceparent(GOOD)
    assert parent == trace.TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1)
    assert parent.sampled and parent.text == GOOD


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        GOOD.upper(),  # hex is lowercase
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace-id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent-id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
        GOOD + "-extra",  # version 00 has exactly four fields
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace-id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  # future version: a dash must follow
        12,
    ],
)
def test_invalid_traceparents_are_refused(value: object) -> None:
    assert trace.parse_traceparent(value) is None


def test_a_future_version_is_read_leniently_and_passed_on_as_version_00() -> None:
    parent = trace.parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-comes-next")
    assert parent is not None and parent.flags == 1  # only the sampled flag is understood
    assert parent.text == GOOD


def test_a_child_keeps_the_trace_and_flags_under_a_new_parent() -> None:
    parent = trace.parse_traceparent(GOOD.replace("-01", "-00"))
    child = parent.child()
    assert child.trace_id == parent.trace_id and child.flags == 0 and child.parent_id != parent.parent_id
    assert trace.parse_traceparent(child.text) == child


def test_new_ids_are_well_formed() -> None:
    parent = trace.new_traceparent()
    assert trace.parse_traceparent(parent.text) == parent
    assert len({trace.new_span_id() for _ in range(100)}) == 100


def test_tracestate_is_kept_as_is_when_valid() -> None:
    assert (
        trace.parse_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE") == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    )
    assert trace.parse_tracestate("vendor@tenant=x") == "vendor@tenant=x"


@pytest.mark.parametrize(
    "value", ["no-equals", "a=1,a=2", "UPPER=1", "k=bad,value", ",".join(f"k{i}=v" for i in range(33))]
)
def test_invalid_tracestate_is_dropped(value: str) -> None:
    assert trace.parse_tracestate(value) is None


def test_long_tracestate_is_trimmed_to_the_limits() -> None:
    long_member = "big=" + "x" * 200
    members = [f"k{i}={'v' * 20}" for i in range(30)]
    kept = trace.parse_tracestate(",".join([members[0], long_member, *members[1:]]))
    assert kept is not None and len(kept) <= trace.MAX_STATE_CHARS
    assert "big=" not in kept and kept.startswith(members[0] + "," + members[1])


def test_headers_without_a_valid_traceparent_start_a_new_trace() -> None:
    bad = trace.from_headers({"traceparent": "00-zz", "tracestate": "a=1"})
    assert not bad.remote and bad.state is None and trace.parse_traceparent(bad.parent.text)
    good = trace.from_headers({"traceparent": GOOD, "tracestate": "a=1"})
    assert good.remote and good.trace_id == GOOD[3:35] and good.state == "a=1"
    legacy = trace.from_headers({"traceId": "ab" * 16})
    assert legacy.trace_id == "ab" * 16 and not legacy.remote


def test_a_new_request_carries_a_traceparent_and_a_matching_trace_id() -> None:
    request = env.new_request("svc", "cmd")
    headers = request["headers"]
    parent = trace.parse_traceparent(headers["traceparent"])
    assert parent is not None and headers["traceId"] == parent.trace_id and headers["spanId"] == parent.parent_id
    given = env.new_request("svc", "cmd", headers={"traceparent": GOOD, "tracestate": "a=1", "userId": "u"})["headers"]
    assert given["traceparent"] == GOOD and given["traceId"] == GOOD[3:35] and given["tracestate"] == "a=1"
    assert given["userId"] == "u"


def test_a_request_made_inside_a_handler_continues_its_trace() -> None:
    token = trace.current.set(trace.from_headers({"traceparent": GOOD}))
    try:
        headers = env.new_request("svc", "cmd")["headers"]
    finally:
        trace.current.reset(token)
    parent = trace.parse_traceparent(headers["traceparent"])
    assert parent.trace_id == GOOD[3:35] and parent.parent_id != GOOD[36:52]


def test_an_invalid_traceparent_does_not_make_the_envelope_invalid() -> None:
    request = env.new_request("svc", "cmd")
    request["headers"]["traceparent"] = "not-a-traceparent"
    assert env.check(request) is request
