"""The addresses the broker gives the requests it hands to workers: never a zero byte (a worker
that keeps the address as a C string would cut it there), always TOKEN_BYTES long, and never the
same twice, across every place where the count carries into the next byte."""

from __future__ import annotations

from arbiter.wire.mdp import TOKEN_BYTES, Tokens

BASE = 255  # digits 1 to 255: the count in base 255


def expected(count: int) -> bytes:
    """The ``count``-th token (1-based): the count in base 255, each digit written as digit + 1."""
    digits = bytearray()
    for _ in range(TOKEN_BYTES):
        count, digit = divmod(count, BASE)
        digits.append(digit + 1)
    assert count == 0, "the count does not fit"
    return bytes(reversed(digits))


def starting_after(count: int) -> Tokens:
    """Tokens whose next one is the ``count + 1``-th, without drawing ``count`` tokens first."""
    tokens = Tokens()
    tokens._digits = bytearray(expected(count))
    return tokens


def test_the_first_tokens_across_the_first_two_carries_hold_no_zero_byte():
    tokens = Tokens()
    drawn = [tokens.next() for _ in range(2 * BASE**2 + 10)]  # past the 255th, 256th, 65,025th, 65,026th
    assert all(len(token) == TOKEN_BYTES and b"\0" not in token for token in drawn)
    assert len(set(drawn)) == len(drawn)
    assert drawn == sorted(drawn)  # fixed width, so byte order is the order they were drawn in
    assert drawn == [expected(count) for count in range(1, len(drawn) + 1)]
    pad = b"\x01" * (TOKEN_BYTES - 3)
    assert drawn[253:256] == [pad + b"\x01\x01\xff", pad + b"\x01\x02\x01", pad + b"\x01\x02\x02"]  # 254th-256th
    assert drawn[BASE**2 - 2 : BASE**2 + 1] == [pad + b"\x01\xff\xff", pad + b"\x02\x01\x01", pad + b"\x02\x01\x02"]


def test_tokens_across_every_carry_up_to_the_last_byte_hold_no_zero_byte():
    for place in range(1, TOKEN_BYTES):
        for carry in (BASE**place, 2 * BASE**place, (BASE - 1) * BASE**place):
            tokens = starting_after(carry - 3)
            drawn = [tokens.next() for _ in range(6)]
            assert drawn == [expected(carry - 3 + n) for n in range(1, 7)], (place, carry)
            assert all(len(token) == TOKEN_BYTES and b"\0" not in token for token in drawn)
            assert drawn == sorted(set(drawn))
    last = BASE**TOKEN_BYTES - 1  # every digit 255: the last token there is
    tokens = starting_after(last - 2)
    assert [tokens.next(), tokens.next()] == [expected(last - 1), b"\xff" * TOKEN_BYTES]
