"""The dead-letter queue: stored losslessly, merged on repeat, stored once however often the broker
hands a letter in, listed, purged, replayed (store and SDK client, composed by the CLI), and its CLI."""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import peewee as pw
import psycopg2
import pytest
import zmq
from broker_helpers import wait_until
from click.testing import CliRunner, Result

from arbiter.cli.common import (
    Context,
    parse_duration,  # what --older-than reads with
)
from arbiter.cli.dlq_commands import dlq as dlq_cli
from arbiter.cli.dlq_commands import replay_letter
from arbiter.sdk.client import Client, RequestTimeout
from arbiter.store import database as state
from arbiter.store import dead_letters as dlq
from arbiter.store import models
from arbiter.wire import envelope as env
from arbiter.wire.mdp import MDPC01

PG = {"host": "127.0.0.1", "port": 5432, "dbname": "test", "user": "postgres"}
BINARY = [bytes(range(256)), b"", b"\xff\xfe\x00\x80 not utf-8", "héllo, wörld ✓".encode()]


# ---------------------------------------------------------------- stores


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state.db"
    state.open_store(f"sqlite:///{path}")
    yield path
    state.close_store()


@pytest.fixture
def pg_store() -> Iterator[str]:
    """A schema of its own in the test database, dropped afterwards."""
    schema = "dlq_" + uuid.uuid4().hex[:8]
    con = psycopg2.connect(**PG)
    con.autocommit = True
    con.cursor().execute(f"CREATE SCHEMA {schema}")
    try:
        state.open_store(f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}")
        yield schema
        state.close_store()
    finally:
        con.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        con.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("sqlite_store" if request.param == "sqlite" else "pg_store")


def _row(letter_id: str) -> models.DeadLetter:
    return models.DeadLetter.get_by_id(letter_id)


def _rename(letter_id: str, new_id: str) -> str:
    models.DeadLetter.update(id=new_id).where(models.DeadLetter.id == letter_id).execute()
    return new_id


def _age(letter_id: str, days: float) -> None:
    past = models.now() - dt.timedelta(days=days)
    models.DeadLetter.update(first_at=past, last_at=past).where(models.DeadLetter.id == letter_id).execute()


# ---------------------------------------------------------------- recording


def test_a_repeat_counts_on_the_pending_letter(store):
    first = dlq.record("svc", [b"body"], dlq.EXPIRED, "took too long", message_id="m1", client="c1")
    again = dlq.record("svc", [b"body"], dlq.EXPIRED, "took too long again", message_id="m1")
    assert again == first
    row = _row(first)
    assert (row.count, row.detail, row.client) == (2, "took too long again", "c1")
    assert row.last_at >= row.first_at
    other_reason = dlq.record("svc", [b"body"], dlq.EXHAUSTED, message_id="m1")
    other_service = dlq.record("svc2", [b"body"], dlq.EXPIRED, message_id="m1")
    no_id = [dlq.record("svc", [b"plain"], dlq.REJECTED) for _ in range(2)]
    assert len({first, other_reason, other_service, *no_id}) == 5
    models.DeadLetter.update(replayed_at=models.now()).where(models.DeadLetter.id == first).execute()
    after_replay = dlq.record("svc", [b"body"], dlq.EXPIRED, message_id="m1")
    assert after_replay != first and _row(after_replay).count == 1


def test_the_message_id_defaults_to_the_envelopes(sqlite_store):
    request = env.new_request("svc", "run")
    first = dlq.record("svc", [env.encode(request)], dlq.EXHAUSTED)
    assert dlq.record("svc", [env.encode(request)], dlq.EXHAUSTED) == first
    assert _row(first).message_id == request["messageId"] and _row(first).count == 2


def test_service_and_reason_are_required(sqlite_store):
    with pytest.raises(ValueError, match="service"):
        dlq.record("", [b"x"], dlq.EXPIRED)
    with pytest.raises(ValueError, match="reason"):
        dlq.record("svc", [b"x"], "")
    assert dlq.record("svc", [b"x"], "custom-reason")  # other reasons are the broker's business


def test_binary_bodies_round_trip_byte_exact(store):
    letter_id = dlq.record("svc", BINARY, dlq.REJECTED)
    assert dlq.frames_of(_row(letter_id)) == BINARY
    body = dlq.get(letter_id)["body"]
    assert [frame["encoding"] for frame in body] == ["base64", "utf-8", "base64", "utf-8"]
    assert body[3]["data"] == "héllo, wörld ✓" and [frame["size"] for frame in body] == [len(f) for f in BINARY]
    assert dlq.decode_frames(dlq.encode_frames(BINARY)) == BINARY


# ---------------------------------------------------------------- reading


def test_list_is_newest_first_and_filters(store):
    old = dlq.record("alpha", [b"1"], dlq.EXPIRED)
    _age(old, 2)
    mid = dlq.record("beta", [b"2"], dlq.REJECTED)
    _age(mid, 1)
    new = dlq.record("alpha", [b"33"], dlq.REJECTED, message_id="m")
    assert [row["id"] for row in dlq.list_letters()] == [new, mid, old]
    assert [row["id"] for row in dlq.list_letters(service="alpha")] == [new, old]
    assert [row["id"] for row in dlq.list_letters(reason=dlq.REJECTED)] == [new, mid]
    assert [row["id"] for row in dlq.list_letters(limit=1)] == [new]
    top = dlq.list_letters()[0]
    assert (top["messageId"], top["frames"], top["bytes"], top["replayedAt"]) == ("m", 1, 2, None)
    assert top["lastAt"].endswith("Z")


def test_ids_can_be_shortened_to_a_unique_prefix(store):
    one = _rename(dlq.record("svc", [b"1"], dlq.EXPIRED), "abc1" + "0" * 28)
    two = _rename(dlq.record("svc", [b"2"], dlq.EXPIRED), "abc2" + "0" * 28)
    assert dlq.get("abc1")["id"] == one
    assert dlq.get(two)["id"] == two
    assert dlq.get("ABC2")["id"] == two
    with pytest.raises(dlq.AmbiguousLetterId, match="several"):
        dlq.get("abc")
    with pytest.raises(dlq.LetterNotFound, match="no dead letter with id 'fff'"):
        dlq.get("fff")
    with pytest.raises(LookupError):
        dlq.get("")
    with pytest.raises(LookupError):
        dlq.get("abc_")  # LIKE wildcards are not wildcards here


# ---------------------------------------------------------------- purging


def test_purge_variants(store):
    ids = [dlq.record("alpha" if i % 2 else "beta", [b"x"], dlq.EXPIRED) for i in range(6)]
    _age(ids[0], 10)
    _age(ids[1], 10)
    assert dlq.purge(older_than=dt.timedelta(days=7), dry_run=True) == 2
    assert models.DeadLetter.select().count() == 6
    assert dlq.purge(older_than=dt.timedelta(days=7), service="alpha") == 1  # ids[1]
    assert dlq.purge(older_than=dt.timedelta(days=7)) == 1  # ids[0]
    assert dlq.purge(ids=[ids[2][:10], ids[3]]) == 2
    with pytest.raises(dlq.LetterNotFound):
        dlq.purge(ids=["nope"])
    assert dlq.purge(service="beta") == 1
    assert dlq.purge(ids=[]) == 0
    assert dlq.purge() == 1
    assert dlq.list_letters() == []


class BusyOnce:
    """``state.writing`` that finds the database locked the first time, as a write racing the
    broker's recorder can: a write that goes through it with retries still succeeds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = 0
        self._writing = state.writing
        monkeypatch.setattr(state, "writing", self)

    def __call__(self) -> Any:
        self.entered += 1
        if self.entered == 1:
            raise pw.OperationalError("database is locked")
        return self._writing()


def test_purge_writes_under_the_write_lock_and_waits_out_a_busy_database(store, monkeypatch):
    ids = [dlq.record("svc", [b"x"], dlq.EXPIRED) for _ in range(3)]
    busy = BusyOnce(monkeypatch)
    assert dlq.purge(ids=ids[:2]) == 2
    assert busy.entered == 2 and [row["id"] for row in dlq.list_letters()] == [ids[2]]


def test_marking_a_replay_writes_under_the_write_lock_and_waits_out_a_busy_database(store, monkeypatch):
    letter_id = dlq.record("svc", [b"x"], dlq.EXPIRED)
    busy = BusyOnce(monkeypatch)
    dlq.mark_replayed(letter_id)
    assert busy.entered == 2 and dlq.get(letter_id)["replayedAt"] is not None


# ---------------------------------------------------------------- letters the broker hands in


def _handed_in(letter_id: str, message_id: str | None, body: bytes = b"x", at: float = 1_700_000_000.5) -> tuple:
    """A letter as the broker's recorder receives it (:data:`dlq.Submitted`)."""
    return (letter_id, "svc", [body, b"\xff"], dlq.EXHAUSTED, "all failed", message_id, "c0ffee", at)


def test_a_letter_handed_in_again_is_neither_stored_nor_counted_twice(store):
    """A batch the broker sends again after its recorder died may hold letters already written:
    new ones and repeats counted on an earlier letter alike."""
    batch = [_handed_in("a" * 32, "m1"), _handed_in("b" * 32, "m1"), _handed_in("c" * 32, None)]
    first = dlq.write_letters(dlq.submitted(item) for item in batch)
    assert first == ["a" * 32, "a" * 32, "c" * 32]
    assert dlq.write_letters(dlq.submitted(item) for item in batch) == first  # the whole batch again
    assert dlq.write_letters([dlq.submitted(batch[1])]) == ["a" * 32]  # or only its end
    assert models.DeadLetter.select().count() == 2
    row = _row("a" * 32)
    assert (row.count, row.client, dlq.frames_of(row)) == (2, "c0ffee", [b"x", b"\xff"])
    assert row.first_at == dt.datetime(2023, 11, 14, 22, 13, 20, 500000)  # when it died, not when written
    assert _row("c" * 32).count == 1
    dlq.write_letters([dlq.submitted(_handed_in("d" * 32, "m1"))])  # a new repeat counts
    assert _row("a" * 32).count == 3


def test_repeat_ids_are_forgotten_after_a_while_and_with_their_letter(store):
    dlq.write_letters(dlq.submitted(_handed_in(i * 32, "m1", at=time.time())) for i in "abcd")
    assert models.DeadLetterRepeat.select().count() == 3
    long_ago = models.now() - dlq.REPEAT_MEMORY - dt.timedelta(minutes=1)
    models.DeadLetterRepeat.update(at=long_ago).where(models.DeadLetterRepeat.id != "d" * 32).execute()
    assert dlq.forget_repeats(limit=1) == 1
    assert dlq.forget_repeats(limit=10) == 1
    assert [r.id for r in models.DeadLetterRepeat.select()] == ["d" * 32]
    assert _row("a" * 32).count == 4  # the count stays
    assert dlq.purge(ids=["a" * 32]) == 1
    assert models.DeadLetterRepeat.select().count() == 0


# ---------------------------------------------------------------- replaying against a real socket


class FakeFrontend:
    """A ROUTER on a free port answering MDP client requests with ``ok``, recording what came in."""

    def __init__(self, answer: bool = True) -> None:
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        port = self._sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.answer = answer
        self.received: list[list[bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 20  # never outlive a hung test by much
        while not self._stop.is_set() and time.monotonic() < deadline:
            if not self._sock.poll(20):
                continue
            identity, *frames = self._sock.recv_multipart()
            self.received.append(frames)
            if self.answer and frames[:2] == [b"", MDPC01]:
                self._sock.send_multipart([identity, b"", MDPC01, frames[2], b"ok"])
        self._sock.close(linger=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._ctx.term()


@pytest.fixture
def frontend() -> Iterator[FakeFrontend]:
    server = FakeFrontend()
    yield server
    server.close()


@pytest.fixture
def silent_frontend() -> Iterator[FakeFrontend]:
    server = FakeFrontend(answer=False)
    yield server
    server.close()


def _stale_envelope() -> dict[str, Any]:
    """A request whose expiry has passed, on its second attempt, as the broker dead-letters it."""
    request = env.new_request("exec-automator", "analyze-document", {"documentPath": "rfp.pdf"}, timeout_ms=1)
    request["metadata"]["retryCount"] = 1
    request["metadata"]["expiresAt"] = "2020-01-01T00:00:00.000Z"
    return request


def _assert_refreshed(sent: bytes, original: dict[str, Any], retry_count: int, sent_at: dt.datetime) -> None:
    """Same envelope, same messageId, one more retry, and an expiry after the moment it was sent."""
    original = copy.deepcopy(original)
    replayed = json.loads(sent)
    assert replayed["messageId"] == original["messageId"]
    assert replayed["metadata"]["retryCount"] == retry_count
    assert not env.is_expired(replayed, now=sent_at)
    for key in ("retryCount", "expiresAt"):
        replayed["metadata"].pop(key)
        original["metadata"].pop(key)
    assert replayed == original


def _replay(letter_id: str, endpoint: str, timeout: float, retries: int) -> Any:
    with Client(endpoint, timeout=timeout, retries=retries) as client:
        return replay_letter(client, letter_id)


def test_replay_sends_a_refreshed_envelope_and_marks_the_letter(sqlite_store, frontend):
    original = _stale_envelope()
    letter_id = dlq.record("exec-automator", [env.encode(original)], dlq.EXPIRED)
    sent_at = env.utc_now()
    reply = _replay(letter_id[:8], frontend.endpoint, timeout=2.0, retries=1)
    assert (reply.body, reply.attempts) == (b"ok", 1)
    [frames] = frontend.received
    assert frames[:3] == [b"", MDPC01, b"exec-automator"] and len(frames) == 4
    _assert_refreshed(frames[3], original, retry_count=2, sent_at=sent_at)
    assert dlq.get(letter_id)["replayedAt"] is not None
    assert dlq.frames_of(_row(letter_id)) == [env.encode(original)]  # stored as it died, replayable again
    again = dlq.record("exec-automator", [env.encode(original)], dlq.EXPIRED)
    assert again != letter_id  # a failure after a replay is a new letter


def test_replay_sends_binary_multi_frame_bodies_byte_exact(sqlite_store, frontend):
    single = dlq.record("raw", [BINARY[0]], dlq.REJECTED)
    multi = dlq.record("raw", BINARY, dlq.REJECTED)
    assert _replay(single, frontend.endpoint, timeout=2.0, retries=0).body == b"ok"
    assert _replay(multi, frontend.endpoint, timeout=2.0, retries=0).body == b"ok"
    assert [frames[3:] for frames in frontend.received] == [[BINARY[0]], BINARY]
    assert all(frames[:3] == [b"", MDPC01, b"raw"] for frames in frontend.received)


def test_replay_retries_then_times_out_and_leaves_the_letter(sqlite_store, silent_frontend):
    original = _stale_envelope()
    letter_id = dlq.record("exec-automator", [env.encode(original), b"extra"], dlq.EXPIRED)
    sent_at = env.utc_now()
    with pytest.raises(RequestTimeout):
        _replay(letter_id, silent_frontend.endpoint, timeout=0.3, retries=1)
    assert dlq.get(letter_id)["replayedAt"] is None
    wait_until(lambda: len(silent_frontend.received) >= 2, 5, 0.01, what="the silent frontend recorded both attempts")
    first, second = silent_frontend.received
    _assert_refreshed(first[3], original, retry_count=2, sent_at=sent_at)
    _assert_refreshed(second[3], original, retry_count=3, sent_at=sent_at)  # Lazy Pirate counts its own retry too
    assert first[4:] == second[4:] == [b"extra"]


def test_replay_of_an_unknown_id_is_a_lookup_error(sqlite_store, frontend):
    with pytest.raises(LookupError):
        _replay("0123", frontend.endpoint, timeout=0.5, retries=0)
    assert frontend.received == []


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with only configs: the state store under .arbiter, the frontend on a dead port."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "state.yaml").write_text("database: sqlite:///.arbiter/state.db\n")
    (tmp_path / "configs" / "broker.yaml").write_text("endpoints:\n  frontend: tcp://127.0.0.1:9\n")
    return tmp_path


def _seed(root: Path, *letters: tuple[str, list[bytes], str, str | None]) -> list[str]:
    state.open_store("sqlite:///.arbiter/state.db", root)
    try:
        return [dlq.record(service, body, reason, message_id=mid) for service, body, reason, mid in letters]
    finally:
        state.close_store()


def run(root: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(dlq_cli, list(args), obj=Context(root=root), input=input)


def _count(root: Path) -> int:
    state.open_store("sqlite:///.arbiter/state.db", root)
    try:
        return models.DeadLetter.select().count()
    finally:
        state.close_store()


def test_cli_list_table_and_json(project):
    assert run(project, "list").output == "no dead letters\n"
    ids = _seed(
        project,
        ("exec-automator", [b"{}"], dlq.EXPIRED, "m-1"),
        ("exec-automator", [b"{}"], dlq.EXPIRED, "m-1"),
        ("jira-orchestrator", [b"x"], dlq.REJECTED, None),
    )
    result = run(project, "list")
    assert result.exit_code == 0, result.output
    header, *lines = result.output.splitlines()
    assert header.split()[:4] == ["ID", "SERVICE", "REASON", "COUNT"]
    assert lines[0].split()[:4] == [ids[2][:12], "jira-orchestrator", "rejected", "1"]
    assert lines[1].split()[:4] == [ids[0][:12], "exec-automator", "expired", "2"] and lines[1].endswith("m-1")
    data = json.loads(run(project, "list", "--json", "--service", "exec-automator").output)
    assert [(row["id"], row["count"]) for row in data] == [(ids[0], 2)]
    assert json.loads(run(project, "list", "--json", "--reason", "rejected", "--last", "5").output)[0]["id"] == ids[2]
    assert run(project, "list", "--reason", "bogus").exit_code == 2
    assert run(project, "list", "--reason", "undeliverable").exit_code == 2  # no such reason is produced


def test_cli_show(project):
    request = env.new_request("svc", "run", {"k": "v"})
    [text_id, binary_id] = _seed(
        project, ("svc", [env.encode(request)], dlq.EXHAUSTED, None), ("svc", BINARY, dlq.REJECTED, None)
    )
    result = run(project, "show", text_id[:6])
    assert result.exit_code == 0, result.output
    assert f"id:          {text_id}" in result.output and '"command": "run"' in result.output
    assert "message id:  " + request["messageId"] in result.output
    binary = run(project, "show", binary_id)
    assert "hex: 00 01 02 03" in binary.output and "héllo, wörld ✓" in binary.output
    [escape_id] = _seed(project, ("svc", [b"\x1b[2Jcleared"], dlq.REJECTED, None))
    assert "hex: 1b 5b 32 4a 63" in run(project, "show", escape_id).output  # valid UTF-8, but not for a terminal
    data = json.loads(run(project, "show", binary_id, "--json").output)
    assert data["id"] == binary_id and [frame["size"] for frame in data["body"]] == [len(f) for f in BINARY]
    missing = run(project, "show", "ffffffff")
    assert missing.exit_code == 1 and "no dead letter with id 'ffffffff'" in missing.stderr


def test_cli_show_ambiguous_prefix_exits_1(project):
    ids = _seed(project, *[("svc", [b"x"], dlq.EXPIRED, None) for _ in range(40)])
    prefix = next(a[:1] for a in ids for b in ids if a != b and a[:1] == b[:1])
    result = run(project, "show", prefix)
    assert result.exit_code == 1 and "several" in result.stderr


def test_cli_replay_uses_the_configured_frontend(project, frontend):
    (project / "configs" / "broker.yaml").write_text(f"endpoints:\n  frontend: {frontend.endpoint}\n")
    original = _stale_envelope()
    [letter_id] = _seed(project, ("exec-automator", [env.encode(original)], dlq.EXPIRED, None))
    sent_at = env.utc_now()
    result = run(project, "replay", letter_id[:8])
    assert result.exit_code == 0, result.output + result.stderr
    assert f"{letter_id[:8]}: replayed (1 attempt(s))" in result.output
    _assert_refreshed(frontend.received[0][3], original, retry_count=2, sent_at=sent_at)
    data = json.loads(run(project, "replay", letter_id, "--json").output)
    reply = {"size": 2, "encoding": "utf-8", "data": "ok"}
    assert data == [{"id": letter_id, "ok": True, "attempts": 1, "reply": reply}]
    assert json.loads(run(project, "list", "--json").output)[0]["replayedAt"] is not None


def test_cli_replay_failures_exit_1(project, frontend, silent_frontend):
    [letter_id] = _seed(project, ("svc", [b"raw"], dlq.SHUTDOWN, None))
    unknown = run(project, "replay", letter_id, "0000000", "--endpoint", frontend.endpoint, "--json")
    assert unknown.exit_code == 1
    assert [row["ok"] for row in json.loads(unknown.output)] == [True, False]
    timed_out = run(
        project, "replay", letter_id, "--endpoint", silent_frontend.endpoint, "--timeout", "0.2", "--retries", "0"
    )
    assert timed_out.exit_code == 1 and "no reply from service 'svc'" in timed_out.stderr


def test_cli_purge(project):
    ids = _seed(project, *[(f"svc{i % 2}", [b"x"], dlq.EXPIRED, None) for i in range(5)])
    assert run(project, "purge").exit_code == 2
    assert run(project, "purge", ids[0], "--all").exit_code == 2
    bad = run(project, "purge", "--older-than", "7 days")
    assert bad.exit_code == 2 and "not a duration" in bad.output
    missing = run(project, "purge", "nope", "--yes")
    assert missing.exit_code == 1 and "no dead letter" in missing.stderr
    declined = run(project, "purge", "--all", input="n\n")
    assert declined.exit_code == 1 and _count(project) == 5
    assert run(project, "purge", "--older-than", "7d", "--yes").output == "purged 0 dead letter(s)\n"
    assert run(project, "purge", ids[0][:9], ids[1], input="y\n").exit_code == 0
    assert json.loads(run(project, "purge", "--all", "--service", "svc0", "--yes", "--json").output) == {"purged": 2}
    assert run(project, "purge", "--all", "--yes").output == "purged 1 dead letter(s)\n"
    assert _count(project) == 0


def test_durations():
    assert parse_duration("7d") == dt.timedelta(days=7)
    assert parse_duration("12h") == dt.timedelta(hours=12)
    assert parse_duration("30m") == dt.timedelta(minutes=30)
    assert parse_duration("1h30m") == dt.timedelta(minutes=90)
    assert parse_duration("2w") == dt.timedelta(days=14)
    for bad in ("", "7", "d", "7x", "7d junk", "-1d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# ---------------------------------------------------------------- replaying malformed letters


def _with_metadata(**metadata: Any) -> bytes:
    """A stale envelope whose metadata fields are replaced by these (None: the field removed)."""
    request = _stale_envelope()
    for key, value in metadata.items():
        request["metadata"][key] = value
    return json.dumps(request).encode()


def _envelope_with(**fields: Any) -> bytes:
    request = _stale_envelope()
    request.update(fields)
    return json.dumps(request).encode()


# name: (first frame stored, what the replay sends: "as is", or the metadata it carries)
MALFORMED: dict[str, tuple[bytes, Any]] = {
    "not JSON": (b'{"messageId": "m-1", "payload": {', "as is"),
    "not UTF-8": (b"\xff\xfe{}", "as is"),
    "JSON, not an object": (b'[{"messageId": "m-1", "payload": {}}]', "as is"),
    "a JSON string": (b'"run the report"', "as is"),
    "metadata a list": (_envelope_with(metadata=["retryCount", 1]), "as is"),
    "metadata null": (_envelope_with(metadata=None), "as is"),
    "expiresAt not a date": (_with_metadata(expiresAt="next tuesday"), {"retryCount": 2, "expiresAt": "next tuesday"}),
    "expiresAt a number": (_with_metadata(expiresAt=1700000000), {"retryCount": 2, "expiresAt": 1700000000}),
    "retryCount not a count": (_with_metadata(retryCount="three"), {"retryCount": "three", "expiresAt": "refreshed"}),
    "no metadata": (_envelope_with(metadata={}), {"retryCount": 1}),
}


@pytest.mark.parametrize("shape", MALFORMED)
def test_cli_replay_of_a_malformed_envelope_sends_it_refreshed_only_where_it_can_be(
    project: Path, frontend: FakeFrontend, shape: str
) -> None:
    stored, expected = MALFORMED[shape]
    [letter_id] = _seed(project, ("svc", [stored, b"second frame"], dlq.EXHAUSTED, "m-1"))
    sent_at = env.utc_now()
    result = run(project, "replay", letter_id, "--endpoint", frontend.endpoint)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert f"{letter_id}: replayed (1 attempt(s))" in result.output
    [frames] = frontend.received
    assert frames[:3] == [b"", MDPC01, b"svc"] and frames[4:] == [b"second frame"]
    if expected == "as is":
        assert frames[3] == stored
    else:
        sent, original = json.loads(frames[3]), json.loads(stored)
        metadata = {**original["metadata"], **expected}
        if expected.get("expiresAt") == "refreshed":
            assert not env.is_expired(sent, now=sent_at)
            metadata["expiresAt"] = sent["metadata"]["expiresAt"]
        assert sent == {**original, "metadata": metadata}
    state.open_store("sqlite:///.arbiter/state.db", project)
    try:
        assert dlq.frames_of(_row(letter_id)) == [stored, b"second frame"]  # the letter is as it was
    finally:
        state.close_store()


@pytest.mark.parametrize("shape", ["metadata a list", "retryCount not a count", "not JSON"])
def test_cli_replay_of_a_malformed_envelope_that_gets_no_reply_leaves_the_letter(
    project: Path, silent_frontend: FakeFrontend, shape: str
) -> None:
    stored, _ = MALFORMED[shape]
    [letter_id] = _seed(project, ("svc", [stored], dlq.EXHAUSTED, "m-1"))
    result = run(
        project, "replay", letter_id, "--endpoint", silent_frontend.endpoint, "--timeout", "0.2", "--retries", "1"
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {letter_id}: no reply from service 'svc' after 2 attempt(s)")
    wait_until(lambda: len(silent_frontend.received) == 2, 5, 0.01, what="both attempts arrived")
    first, second = (frames[3] for frames in silent_frontend.received)
    assert first == second  # the client counts no retries on what is not an envelope it can count on
    assert json.loads(run(project, "show", letter_id, "--json").output)["replayedAt"] is None


BAD_BODIES = {
    "not JSON": b"\x00garbage",
    "JSON, not a list": b'{"frame": "x"}',
    "a list of numbers": b"[1, 2]",
    "beyond Latin-1": b'["\\u20ac"]',
}


@pytest.mark.parametrize("shape", BAD_BODIES)
def test_cli_replay_of_a_letter_whose_body_cannot_be_read_refuses_in_one_line(
    project: Path, frontend: FakeFrontend, shape: str
) -> None:
    [letter_id, good_id] = _seed(project, ("svc", [b"x"], dlq.EXPIRED, None), ("svc", [b"y"], dlq.EXPIRED, None))
    state.open_store("sqlite:///.arbiter/state.db", project)
    try:
        models.DeadLetter.update(body=BAD_BODIES[shape]).where(models.DeadLetter.id == letter_id).execute()
    finally:
        state.close_store()
    result = run(project, "replay", letter_id, good_id, "--endpoint", frontend.endpoint)
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {letter_id}: its stored body is not a list of frames (")
    assert [frames[3:] for frames in frontend.received] == [[b"y"]]  # nothing sent for it; the next one goes
    state.open_store("sqlite:///.arbiter/state.db", project)
    try:
        row = _row(letter_id)
        assert (bytes(row.body), row.replayed_at) == (BAD_BODIES[shape], None)
    finally:
        state.close_store()
    listed = run(project, "list", "--json")  # the damaged row hides no other, and says what is wrong
    assert listed.exit_code == 0 and {row["id"]: row["frames"] for row in json.loads(listed.output)} == {
        letter_id: None,
        good_id: 1,
    }
    shown = run(project, "show", letter_id)
    assert shown.exit_code == 0 and "body: its stored body is not a list of frames (" in shown.output
    assert json.loads(run(project, "show", letter_id, "--json").output)["body"] == []
