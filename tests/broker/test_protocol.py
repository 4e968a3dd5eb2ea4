"""The READY options and packed frames of docs/PROTOCOL.md §5, as pure functions."""

from __future__ import annotations

import pytest

from arbiter.protocol import PACKED, TOKEN_BYTES, ProtocolError, pack, parse_ready_options, unpack


@pytest.mark.parametrize(
    ("frames", "expected"),
    [([], (1, False)), ([b"7"], (7, False)), ([b"1", PACKED], (1, True)), ([b"50", PACKED], (50, True))],
)
def test_ready_options(frames: list[bytes], expected: tuple[int, bool]) -> None:
    assert parse_ready_options(frames) == expected


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"0"], "bad-credit"),
        ([b"x", PACKED], "bad-credit"),
        ([b"2", b"PACKED"], "bad-option"),
        ([b"2", PACKED, PACKED], "bad-option"),
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
