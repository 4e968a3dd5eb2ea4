"""The READY options, packed and batched frames of docs/PROTOCOL.md §5, as pure functions."""

from __future__ import annotations

import pytest

from arbiter.wire.mdp import BATCHED, PACKED, TOKEN_BYTES, ProtocolError, pack, parse_ready_options, unbatch, unpack


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        ([], (1, None)),
        ([b"7"], (7, None)),
        ([b"1", PACKED], (1, PACKED)),
        ([b"50", PACKED], (50, PACKED)),
        ([b"50", BATCHED], (50, BATCHED)),
    ],
)
def test_ready_options(frames: list[bytes], expected: tuple[int, bytes | None]) -> None:
    assert parse_ready_options(frames) == expected


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"0"], "bad-credit"),
        ([b"x", PACKED], "bad-credit"),
        ([b"2", b"PACKED"], "bad-option"),
        ([b"2", PACKED, PACKED], "bad-option"),
        ([b"2", PACKED, BATCHED], "bad-option"),
        ([b"2", b"batch"], "bad-option"),
    ],
)
def test_bad_ready_options_name_their_reason(frames: list[bytes], reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_ready_options(frames)
    assert caught.value.reason == reason


@pytest.mark.parametrize("body", [[b"one"], [b"", b"two"], [b"a", b"b", b"c"], [b"\x00" * 300]])
def test_pack_and_unpack_round_trip(body: list[bytes]) -> None:
    token = bytes(range(TOKEN_BYTES))
    packed = pack(token, body)
    assert len(packed) == len(body)
    assert unpack(packed) == (token, body)


def test_unpack_refuses_a_frame_shorter_than_a_token() -> None:
    with pytest.raises(ProtocolError) as caught:
        unpack([b"1234567"])
    assert caught.value.reason == "malformed-reply"


def test_unbatch_reads_one_request_per_frame() -> None:
    tokens = [i.to_bytes(TOKEN_BYTES, "little") for i in (1, 2, 3)]
    bodies = [b"one", b"", b"\x00" * 300]
    assert unbatch([t + b for t, b in zip(tokens, bodies)]) == list(zip(tokens, bodies))


def test_unbatch_refuses_the_whole_message_for_one_short_frame() -> None:
    with pytest.raises(ProtocolError) as caught:
        unbatch([bytes(TOKEN_BYTES) + b"fine", b"1234567"])
    assert caught.value.reason == "malformed-reply"
