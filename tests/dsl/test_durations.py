"""Durations: one reading for rule files and the command line, with errors people can act on."""

from __future__ import annotations

import datetime as dt

import pytest
from arbiter.dsl.durations import DurationError, format_ms, parse_ms, parse_timedelta
from arbiter.dsl.formatter import format_source
from arbiter.dsl.parser import parse

from arbiter.cli.common import parse_duration


@pytest.mark.parametrize(
    "text,ms",
    [
        ("500ms", 500),
        ("30s", 30_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("2w", 1_209_600_000),
        ("1h30m", 5_400_000),
        ("1.5h", 5_400_000),
        (" 7D ", 604_800_000),
        ("0s", 0),
    ],
)
def test_parse(text, ms):
    assert parse_ms(text) == ms
    assert parse_timedelta(text) == dt.timedelta(milliseconds=ms)


@pytest.mark.parametrize(
    "text,says",
    [
        ("", "empty"),
        ("7", "needs a unit, e.g. 7s, 7m, 7h or 7d"),
        ("d", "not a duration like"),
        ("7x", "not a duration like"),
        ("7 days", "not a duration like"),
        ("7d junk", "not a duration like"),
        ("-1d", "no spaces or signs"),
        ("0.5ms", "whole number of milliseconds"),
    ],
)
def test_errors_say_what_to_write(text, says):
    with pytest.raises(DurationError) as caught:
        parse_ms(text)
    assert says in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_format_is_the_largest_even_unit():
    assert [format_ms(ms) for ms in (0, 250, 30_000, 90_000, 5_400_000, 86_400_000, 604_800_000)] == [
        "0ms",
        "250ms",
        "30s",
        "90s",
        "90m",
        "1d",
        "1w",
    ]
    for text in ("500ms", "30s", "2m", "1h", "3d"):
        assert format_ms(parse_ms(text)) == text


def test_rule_files_and_the_command_line_read_durations_alike():
    assert parse_duration is parse_timedelta
    module, problems = parse("chain c sequential timeout 1h30m {\n  step a: p cmd timeout 1d retry 2\n}\n")
    assert problems == []
    chain = module.decls[0]
    assert chain.timeout_ms == parse_ms("1h30m") and chain.items[0].timeout_ms == parse_ms("1d")
    assert "timeout 90m {" in format_source("chain c sequential timeout 1h30m {\n  step a: p cmd\n}\n")


def test_a_duration_past_the_longest_timedelta_is_refused_with_the_limit():
    with pytest.raises(DurationError) as caught:
        parse_timedelta("99999999999999d")
    assert "longer than the longest duration" in str(caught.value) and "999,999,999d" in str(caught.value)
