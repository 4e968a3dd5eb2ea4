"""Tables and terminal-safe text of the command line, and the one way it finds the broker."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import orjson
import zmq
from click.testing import CliRunner

from arbiter.cli import main
from arbiter.cli.broker_commands import render_status
from arbiter.cli.common import Context, broker_endpoint
from arbiter.cli.dlq_commands import dlq as dlq_cli
from arbiter.cli.tables import printable, printable_fields, table, truncate, width
from arbiter.store import database as state
from arbiter.store import dead_letters as letters

HOSTILE = "\x1b[31mred\x07"
ESCAPED = "\\x1b[31mred\\x07"


def _no_controls(text: str) -> bool:
    """True when nothing but newlines is a control character (what a terminal would act on)."""
    return not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in text)


# ---------------------------------------------------------------- printable


def test_printable_escapes_c0_del_and_c1_visibly():
    assert printable(HOSTILE) == ESCAPED
    assert printable("a\x00b\x7fc\x9bd\x85") == "a\\x00b\\x7fc\\x9bd\\x85"
    assert printable("one\ntwo\tthree\rfour") == "one\\ntwo\\tthree\\rfour"
    assert printable("plain text, wörld ✓ 部署") == "plain text, wörld ✓ 部署"


def test_printable_keeps_what_the_layout_asks_for():
    assert printable("line\n\tindented\x1b", keep="\n\t") == "line\n\tindented\\x1b"
    assert printable(42) == "42"


def test_printable_fields_reaches_every_nested_string():
    data = {"userInput": HOSTILE, "steps": [{"detail": "x\x07"}], "score": 1.5, "none": None}
    assert printable_fields(data) == {"userInput": ESCAPED, "steps": [{"detail": "x\\x07"}], "score": 1.5, "none": None}


# ---------------------------------------------------------------- table


def test_table_aligns_columns_and_right_aligns_numbers():
    lines = table(["NAME", "COUNT", "NOTE"], [["alpha", 7, "first"], ["be", 1234, ""]], numeric={"COUNT"})
    assert lines == [
        "NAME   COUNT  NOTE",
        "alpha      7  first",
        "be      1234",
    ]
    assert all(line == line.rstrip() for line in lines)


def test_table_rule_and_headerless():
    assert table(["A", "BB"], [["xyz", 1]], rule=True) == ["A    BB", "---  --", "xyz  1"]
    assert table(["A", "B"], [["x", "y"], ["long", "z"]], header=False) == ["x     y", "long  z"]


def test_table_truncates_long_cells_with_an_ellipsis():
    lines = table(["ID", "TEXT"], [["1", "abcdefghijkl"], ["2", "short"]], limits={"TEXT": 6})
    assert lines == ["ID  TEXT", "1   abcde…", "2   short"]
    assert table(["T"], [["exactly"]], limits={"T": 7}) == ["T", "exactly"]


def test_empty_table_is_its_header_or_nothing():
    assert table(["NAME", "COUNT"], [], numeric={"COUNT"}) == ["NAME  COUNT"]
    assert table(["NAME", "COUNT"], [], rule=True) == ["NAME  COUNT", "----  -----"]
    assert table(["NAME"], [], header=False) == []


def test_table_measures_unicode_by_terminal_columns():
    lines = table(["NAME", "N"], [["部署", 1], ["wörld ✓", 22], ["e\u0301te", 3]], numeric={"N"})
    assert [width(line) for line in lines] == [11, 11, 11, 11]
    assert lines[1] == "部署      1"
    assert width("部署") == 4 and width("e\u0301") == 1
    assert truncate("部署到生产环境", 7) == "部署到…" and width(truncate("部署到生产环境", 7)) == 7


def test_table_cells_are_escaped_and_none_is_a_dash():
    assert table(["A", "B"], [[HOSTILE, None]]) == ["A                B", f"{ESCAPED}  -"]
    assert table(["A"], [["two\nlines"]], header=False) == ["two\\nlines"]


# ---------------------------------------------------------------- commands printing what a request brought


def _cli(project: Path, *args: str):
    return CliRunner().invoke(main, ["--root", str(project), *args])


def test_decisions_and_explain_request_do_not_emit_terminal_escapes(project):
    routed = _cli(project, "route", HOSTILE, "--json")
    assert routed.exit_code == 0, routed.output
    request_id = json.loads(routed.stdout)["requestId"]
    listed = _cli(project, "decisions")
    assert listed.exit_code == 0 and ESCAPED in listed.stdout and _no_controls(listed.stdout)
    explained = _cli(project, "explain", "--request", request_id)
    assert explained.exit_code == 0, explained.output
    assert f'"{ESCAPED}"' in explained.stdout and _no_controls(explained.stdout)
    assert "\nDecision\n" in explained.stdout  # the layout's own newlines stay
    as_json = json.loads(_cli(project, "decisions", "--json").stdout)
    assert as_json[0]["userInput"] == HOSTILE  # JSON carries the text as it was


def test_decisions_align_whatever_the_lengths(project):
    for text in ("write a poem", "Build a FastAPI endpoint with MongoDB and Keycloak auth"):
        _cli(project, "route", text)
    lines = _cli(project, "decisions").stdout.splitlines()
    starts = {line.index(" cli ") for line in lines}
    assert len(lines) == 2 and len(starts) == 1


def _dlq_project(tmp_path: Path) -> Path:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "state.yaml").write_text("database: sqlite:///.arbiter/state.db\n")
    state.open_store("sqlite:///.arbiter/state.db", tmp_path)
    try:
        letters.record(
            f"svc{HOSTILE}", [HOSTILE.encode(), "\u009b2J".encode()], "rejected", HOSTILE, message_id=HOSTILE
        )
    finally:
        state.close_store()
    return tmp_path


def test_dlq_list_and_show_do_not_emit_terminal_escapes(tmp_path):
    root = _dlq_project(tmp_path)
    listed = CliRunner().invoke(dlq_cli, ["list"], obj=Context(root=root))
    assert listed.exit_code == 0 and f"svc{ESCAPED}" in listed.output and _no_controls(listed.output)
    letter_id = json.loads(CliRunner().invoke(dlq_cli, ["list", "--json"], obj=Context(root=root)).output)[0]["id"]
    shown = CliRunner().invoke(dlq_cli, ["show", letter_id], obj=Context(root=root))
    assert shown.exit_code == 0, shown.output
    assert f"detail:      {ESCAPED}" in shown.output and f"message id:  {ESCAPED}" in shown.output
    assert "\\x9b2J" in shown.output and _no_controls(shown.output)


def events_printed(events: list[list[bytes]], *options: str) -> list[str]:
    """The lines ``arbiter events`` prints for ``events``, sent by a stand-in for the broker's
    event socket: an XPUB, which receives the command's subscription, so the events go out only
    once the command listens."""
    xpub = zmq.Context.instance().socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{xpub.bind_to_random_port('tcp://127.0.0.1')}"
    args = ["events", "--endpoint", endpoint, "--count", str(len(events)), "--timeout", "20", *options]
    outcome: dict[str, Any] = {}
    command = threading.Thread(target=lambda: outcome.update(result=CliRunner().invoke(main, args)), daemon=True)
    command.start()
    try:
        assert xpub.poll(20_000), "`arbiter events` never subscribed"
        assert xpub.recv() == b"\x01"  # it subscribes to everything
        for frames in events:
            xpub.send_multipart(frames)
        command.join(30)
    finally:
        xpub.close()
    assert not command.is_alive(), "`arbiter events` did not stop after --count events"
    result = outcome["result"]
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_events_human_line_escapes_the_payload():
    event = {"topic": "routing/decision", "timestamp": "t", "payload": {"text": HOSTILE}}
    human = events_printed([[b"routing/decision", orjson.dumps(event)], [b"x", HOSTILE.encode()]])
    assert human[0] == f"t routing/decision text={ESCAPED}"
    assert human[1] == f"x {ESCAPED}" and _no_controls("\n".join(human))
    (as_json,) = events_printed([[b"x", orjson.dumps(event)]], "--json")
    assert json.loads(as_json)["event"]["payload"]["text"] == HOSTILE


def test_status_services_table_aligns_long_and_hostile_names():
    service = {"workers": 1, "credit": 1, "queued": 0, "inflight": 0, "requests": 123456}
    data = {
        "endpoints": {"frontend": "tcp://x"},
        "services": {"a" * 40: service, HOSTILE: service},
        "circuits": {},
    }
    text = render_status(data)
    rows = [line for line in text.splitlines() if "123456" in line or line.startswith("service")]
    assert len({len(line) for line in rows}) == 1 and ESCAPED in text and _no_controls(text)


# ---------------------------------------------------------------- the broker endpoint


def test_endpoint_is_explicit_then_configured_then_default(tmp_path, capsys):
    ctx = Context(root=tmp_path)
    assert broker_endpoint(ctx, None) == "tcp://127.0.0.1:5555"
    assert broker_endpoint(ctx, None, "events_sub") == "tcp://127.0.0.1:5557"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "broker.yaml").write_text("endpoints:\n  frontend: tcp://127.0.0.1:7001\n")
    ctx = Context(root=tmp_path)
    assert broker_endpoint(ctx, None) == "tcp://127.0.0.1:7001"
    assert broker_endpoint(ctx, None, "events_sub") == "tcp://127.0.0.1:5557"
    assert broker_endpoint(ctx, "tcp://127.0.0.1:9") == "tcp://127.0.0.1:9"
    assert capsys.readouterr().err == ""


def test_an_invalid_broker_config_falls_back_to_the_default_and_says_so(tmp_path, capsys):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "broker.yaml").write_text("endpoints:\n  frontend: not-an-endpoint\n")
    assert broker_endpoint(Context(root=tmp_path), None) == "tcp://127.0.0.1:5555"
    assert "configs/broker.yaml has errors" in capsys.readouterr().err


def test_every_broker_command_teaches_where_its_endpoint_comes_from():
    for command in (["status"], ["request"], ["workers"], ["dlq", "replay"], ["demo"], ["events"]):
        out = CliRunner().invoke(main, [*command, "--help"]).output
        assert "--endpoint URL" in out and "configs/broker.yaml" in out, command
    assert "tcp://127.0.0.1:5557" in CliRunner().invoke(main, ["events", "--help"]).output
