"""A state store that cannot be opened or read says so in one line (which store, what is wrong,
what to do) and exit code 1, in every command that opens it and at broker start, never with a
traceback; ``arbiter store check`` tells a sound store from a damaged one without changing it;
a store that fails under a running broker costs the batches it refuses, counted in its status."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml
from click.testing import CliRunner, Result
from loopback import free_port

from arbiter.cli import main
from arbiter.routing.pipeline import Request
from arbiter.sdk.client import Client, RequestTimeout
from arbiter.store import database as state
from arbiter.store import dead_letters as dlq
from arbiter.store import decisions as record
from arbiter.store import migrations, models
from arbiter.store.errors import without_password
from arbiter.store.recorder import Recorder
from arbiter.wire import envelope as env

REPO = Path(__file__).resolve().parent.parent
URL = "sqlite:///.arbiter/state.db"
PG = {"host": "127.0.0.1", "port": 5432, "dbname": "test", "user": "postgres"}
WAIT_S = 30.0
NO_ROUTE_TEXT = "zzqx vvbnm qwpl"  # matches no plugin: the broker answers NO_ROUTE and logs the decision


# ---------------------------------------------------------------- stores, sound and damaged


def db_path(root: Path) -> Path:
    return root / ".arbiter" / "state.db"


def sound_store(root: Path, decisions: int = 1) -> Path:
    """A store with decisions and a dead letter, closed (so its write-ahead log is folded in)."""
    state.open_store(URL, root)
    try:
        for index in range(decisions):
            record.record_decision({"requestId": f"req_{index}", "userInput": f"row {index} " + "x" * 200}, "cli")
        dlq.record("svc", [b"body"], dlq.EXPIRED)
    finally:
        state.close_store()
    return db_path(root)


def garbage_header(root: Path) -> None:
    path = db_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this was never a database. " * 300)


def truncated(root: Path) -> None:
    path = sound_store(root, decisions=300)
    os.truncate(path, 1000)  # less than its first page


def a_directory(root: Path) -> None:
    db_path(root).mkdir(parents=True)


SHAPES: dict[str, tuple[Callable[[Path], Any], str]] = {
    "garbage header": (garbage_header, "file is not a database"),
    "truncated": (truncated, "database disk image is malformed"),
    "a directory": (a_directory, "is a directory, not a database file"),
}
COMMANDS = [
    ["decisions"],
    ["decisions", "prune", "--keep", "1"],
    ["explain", "deploy the tenant to kubernetes"],
    ["explain", "--request", "req_0"],
    ["route", "deploy the tenant to kubernetes"],
    ["test"],
    ["dlq", "list"],
    ["dlq", "show", "abc"],
    ["dlq", "replay", "abc", "--endpoint", "tcp://127.0.0.1:9", "--timeout", "0.1", "--retries", "0"],
    ["dlq", "purge", "--all", "--yes"],
    ["chain", "status", "run_0661a8ebd18f"],
    ["chain", "runs"],
    ["locks", "list"],
    ["log"],
]


def cli(root: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--root", str(root), *args])


def assert_one_line(code: int, stdout: str, stderr: str, where: str, words: str) -> str:
    """Exit 1, nothing on stdout, and one line on stderr naming the store and what is wrong."""
    assert "Traceback" not in stdout + stderr, stderr
    lines = stderr.splitlines()
    assert code == 1, stdout + stderr
    assert len(lines) == 1 and stdout == "", stdout + stderr
    assert lines[0].startswith(f"error: state store {where}: ") and words in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_command_that_opens_a_damaged_store_says_so_in_one_line(project: Path, shape: str) -> None:
    make, words = SHAPES[shape]
    make(project)
    for command in COMMANDS:
        result = cli(project, *command)
        line = assert_one_line(result.exit_code, result.stdout, result.stderr, str(db_path(project)), words)
        assert "arbiter store check" in line or "move it away" in line


@pytest.mark.parametrize("shape", SHAPES)
def test_agents_list_stands_without_a_damaged_store_and_says_so_in_one_line(project: Path, shape: str) -> None:
    """What the broker learned of each plugin comes from the store; the agents come from the
    project's files: they are listed all the same, and the store's problem is one line."""
    make, words = SHAPES[shape]
    make(project)
    for command in (["agents", "list"], ["agents", "list", "--plugin", "fastapi-backend", "--json"]):
        result = cli(project, *command)
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"note: learned figures unavailable (state store {db_path(project)}: ")
        assert words in lines[0] and ("arbiter store check" in lines[0] or "move it away" in lines[0])
    listed = json.loads(result.stdout)
    assert listed and {agent["plugin"] for agent in listed} == {"fastapi-backend"}
    assert all(agent["learned"] is None for agent in listed)
    assert "fastapi-backend" in cli(project, "agents", "list").stdout


def _without_file_permissions() -> None:
    """In the child before exec: as root, give up overriding file permissions, so a file this
    user may not read is refused as it would be to anyone else."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def arbiter(root: Path, *args: str, **options: Any) -> subprocess.CompletedProcess:
    """The command line as a process, as people run it."""
    command = [sys.executable, "-m", "arbiter", "--root", str(root), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=root, **options)


def test_a_store_this_user_may_not_read_says_so_in_one_line(project: Path) -> None:
    path = sound_store(project)
    path.chmod(0)
    try:
        for command in (["decisions"], ["dlq", "list"], ["test"]):
            done = arbiter(project, *command, preexec_fn=_without_file_permissions)
            line = assert_one_line(done.returncode, done.stdout, done.stderr, str(path), "permission denied")
            assert "read and write access" in line
        done = arbiter(project, "store", "check", "--json", preexec_fn=_without_file_permissions)
        report = json.loads(done.stdout)
        assert done.returncode == 1 and report["problems"] == ["permission denied: this user cannot read the file"]
    finally:
        path.chmod(0o644)


def test_a_damaged_store_from_the_command_line_process(project: Path) -> None:
    """The installed entry point, not only click's test runner: no traceback reaches the terminal."""
    garbage_header(project)
    for command in (["decisions", "--json"], ["dlq", "list"]):
        done = arbiter(project, *command)
        assert_one_line(done.returncode, done.stdout, done.stderr, str(db_path(project)), "file is not a database")


def test_a_store_found_damaged_while_reading_rows_says_so_too(project: Path) -> None:
    """The schema opens, but a page of the decision log is garbage: the read fails midway."""
    path = sound_store(project, decisions=400)
    damage_a_table_page(path)
    result = cli(project, "decisions", "--last", "1000")
    assert_one_line(result.exit_code, result.stdout, result.stderr, str(path), "malformed")


def damage_a_table_page(path: Path, start: int = 0, size: int = 4096) -> None:
    """Overwrite part of a page of the decision log's rows (the one holding row 200) with noise;
    the schema and the other pages stay sound. From its start, the page is no B-tree page at all;
    further in, its cells point nowhere, which only a check that walks every page notices."""
    page = path.read_bytes().index(b"row 200 ") // 4096
    noise = random.Random(7)
    with path.open("r+b") as file:
        file.seek(page * 4096 + start)
        file.write((b"\x0d" if start == 0 else b"") + bytes(noise.randrange(256) for _ in range(size - (start == 0))))


def test_an_unreachable_postgresql_server_says_so_without_the_password(project: Path) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/test"
    (project / "configs" / "state.yaml").write_text(f"database: {url}\n")
    shown = f"postgresql://postgres@127.0.0.1:{url.rsplit(':', 1)[1]}"
    for command in (["decisions"], ["dlq", "list"], ["explain", "--request", "req_0"]):
        result = cli(project, *command)
        line = assert_one_line(result.exit_code, result.stdout, result.stderr, shown, "cannot connect")
        assert "Connection refused" in line and "hunter2" not in result.output
    check = cli(project, "store", "check", "--json")
    report = json.loads(check.stdout)
    assert check.exit_code == 1 and not report["ok"] and report["location"] == shown
    assert "Connection refused" in report["problems"][0] and "hunter2" not in check.output


def test_urls_are_shown_without_their_password() -> None:
    assert without_password("postgresql://u:p@h:5432/db?sslmode=require&password=x") == (
        "postgresql://u@h:5432/db?sslmode=require"
    )
    assert without_password("postgresql://h/db") == "postgresql://h/db"
    assert without_password("postgresql://u@h/db") == "postgresql://u@h/db"


def test_a_newer_schema_is_one_line_too(project: Path) -> None:
    sound_store(project)
    state.open_store(URL, project)
    models.Meta.update(value="99").execute()
    state.close_store()
    result = cli(project, "dlq", "list")
    line = assert_one_line(result.exit_code, result.stdout, result.stderr, str(db_path(project)), "version 99")
    assert "upgrade Arbiter" in line


# ---------------------------------------------------------------- the broker at start


def start_broker(root: Path) -> subprocess.Popen:
    ports = [free_port() for _ in range(3)]
    endpoints = [f"tcp://127.0.0.1:{port}" for port in ports]
    command = [sys.executable, str(REPO / "broker.py"), "--root", str(root)]
    for option, endpoint in zip(("--frontend", "--events-pub", "--events-sub"), endpoints):
        command += [option, endpoint]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.endpoint = endpoints[0]  # type: ignore[attr-defined]
    return process


@pytest.mark.parametrize("shape", ["garbage header", "truncated", "postgresql unreachable"])
def test_the_broker_refuses_to_start_on_a_damaged_store_in_one_line(project: Path, shape: str) -> None:
    if shape in SHAPES:
        make, words = SHAPES[shape]
        make(project)
        where = str(db_path(project))
    else:
        port = free_port()
        (project / "configs" / "state.yaml").write_text(f"database: postgresql://postgres:pw@127.0.0.1:{port}/test\n")
        where, words = f"postgresql://postgres@127.0.0.1:{port}/test", "Connection refused"
    process = start_broker(project)
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1, stderr
    assert "Traceback" not in stdout + stderr, stderr
    store_lines = [line for line in stderr.splitlines() if "state store" in line]
    assert len(store_lines) == 1 and len(stderr.splitlines()) == 1, stderr
    assert f"arbiter.broker ERROR state store {where}: " in store_lines[0] and words in store_lines[0]


# ---------------------------------------------------------------- arbiter store check


def check(root: Path) -> tuple[int, dict[str, Any], str]:
    as_json = cli(root, "store", "check", "--json")
    text = cli(root, "store", "check")
    assert as_json.exit_code == text.exit_code and "Traceback" not in as_json.output + text.output
    return as_json.exit_code, json.loads(as_json.stdout), text.stdout


def test_store_check_on_a_sound_store(project: Path) -> None:
    code, report, text = check(project)
    assert code == 0 and report["ok"] and report["exists"] is False  # none yet: nothing is wrong
    assert not db_path(project).exists()  # and checking did not create it

    path = sound_store(project, decisions=3)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    code, report, text = check(project)
    assert code == 0 and report["ok"] and report["problems"] == []
    assert report["schemaVersion"] == report["currentSchemaVersion"] == migrations.SCHEMA_VERSION
    assert report["integrity"] == {"quick_check": ["ok"], "integrity_check": ["ok"]}
    assert report["tables"]["routing_decisions"] == 3 and report["tables"]["dead_letters"] == 1
    assert report["sizeBytes"] == path.stat().st_size and report["location"] == str(path)
    assert (
        text.splitlines()[-1] == "sound"
        and "routing_decisions" in text
        and f"schema version: {migrations.SCHEMA_VERSION} (current)" in text
    )
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_store_check_reads_an_old_store_without_migrating_it(project: Path) -> None:
    path = db_path(project)
    path.parent.mkdir()
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE routing_decisions (id TEXT PRIMARY KEY, request_id TEXT NOT NULL)")
    con.execute("INSERT INTO routing_decisions VALUES ('d1', 'req1')")
    con.commit()
    con.close()
    code, report, text = check(project)
    assert code == 0 and report["schemaVersion"] == 1 and report["tables"] == {"routing_decisions": 1}
    assert f"older; migrated to {migrations.SCHEMA_VERSION} when next opened" in text
    assert sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall() == [
        ("routing_decisions",),
        ("sqlite_autoindex_routing_decisions_1",),
    ]


@pytest.mark.parametrize("shape", SHAPES)
def test_store_check_on_a_damaged_store(project: Path, shape: str) -> None:
    make, words = SHAPES[shape]
    make(project)
    code, report, text = check(project)
    assert code == 1 and not report["ok"]
    assert words in report["problems"][0] and report["hint"]
    assert f"problem: {report['problems'][0]}" in text and "what to do: " in text


@pytest.mark.parametrize("damage", ["a whole page", "cells of a page"])
def test_store_check_finds_a_damaged_page(project: Path, damage: str) -> None:
    path = sound_store(project, decisions=400)
    damage_a_table_page(path, *((0, 4096) if damage == "a whole page" else (100, 2000)))
    code, report, text = check(project)
    assert code == 1 and report["integrity"]["quick_check"] != ["ok"]
    expected = "database disk image is malformed" if damage == "a whole page" else "quick_check: On tree page "
    assert report["problems"][0].startswith(expected), report["problems"]
    assert (
        "README, 'Recovering the state store'" in report["hint"]
        and "what to do: stop the broker and move the file" in text
    )


def _postgres_available() -> bool:
    try:
        import psycopg2

        psycopg2.connect(connect_timeout=2, **PG).close()
        return True
    except Exception:
        return False


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A schema of its own in the test database, dropped afterwards."""
    if not _postgres_available() and not os.environ.get("CI"):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import psycopg2

    schema = "chk_" + uuid.uuid4().hex[:8]
    con = psycopg2.connect(**PG)
    con.autocommit = True
    con.cursor().execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        con.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        con.close()


def test_store_check_on_postgresql(project: Path, pg_schema: str) -> None:
    url = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{pg_schema}"
    state.open_store(url)
    dlq.record("svc", [b"x"], dlq.EXPIRED)
    state.close_store()
    (project / "configs" / "state.yaml").write_text(yaml.safe_dump({"database": url}))
    code, report, text = check(project)
    assert code == 0 and report["ok"] and report["kind"] == "postgresql"
    assert report["schemaVersion"] == migrations.SCHEMA_VERSION and report["tables"]["dead_letters"] == 1
    assert report["sizeBytes"] > 0 and text.splitlines()[-1] == "sound"


# ---------------------------------------------------------------- failing under a running broker


@pytest.fixture
def template(shipped_router: Any) -> record.RowTemplate:
    data = shipped_router.route(Request("create a keycloak realm", request_id="req_first")).to_json(False)
    return record.RowTemplate.of(data, "broker")


def settle(recorder: Recorder, done: Callable[[], bool]) -> None:
    """Drive the recorder as the broker's loop does until ``done`` (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, f"not settled: {recorder.written=} {recorder.queued=} {recorder.errors=}"
        recorder.flush()
        time.sleep(0.01)


def replace_with_garbage(path: Path) -> None:
    """Another file where the store was, as a restore gone wrong or a careless copy leaves it."""
    stray = path.with_name("stray")
    stray.write_bytes(b"not a database at all " * 2000)
    os.replace(stray, path)


def test_batches_lost_to_a_store_replaced_under_the_recorder_are_counted(
    tmp_path: Path, template: record.RowTemplate
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    state.open_store(url)
    state.close_store()  # this test holds no connection: the recorder's is the only one
    recorder = Recorder(url, tmp_path)
    letters = recorder.dead_letters
    try:
        recorder.submit_entry(template.entry("req_before", {"status": "success"}, True))
        letters.submit("svc", [b"before"], dlq.EXPIRED)
        settle(recorder, lambda: recorder.written == 1 and letters.written == 1)

        replace_with_garbage(tmp_path / "state.db")
        for index in range(3):
            recorder.submit_entry(template.entry(f"req_lost_{index}", {"status": "success"}, True))
        letters.submit("svc", [b"lost"], dlq.EXHAUSTED)
        settle(recorder, lambda: recorder.queued == 0 and letters.queued == 0)
        assert recorder.written == 1 and recorder.dropped == 3
        assert letters.written == 1 and letters.dropped + getattr(letters, "spilled", 0) >= 1  # lost, or kept aside
        failure = f"not written: state store {tmp_path / 'state.db'}: file is not a database"
        for tally in (recorder, letters):
            assert any(failure in error for error in tally.errors), tally.errors
        recorder.submit_circuit("aws-cdk", "1.0.0", "open", "5 failures in 60s")
        settle(
            recorder, lambda: any(e.startswith("circuits") and failure in e for e in recorder.errors + letters.errors)
        )

        os.replace(tmp_path / "state.db", tmp_path / "state.db.bad")  # moved away: a fresh store
        recorder.submit_entry(template.entry("req_after", {"status": "success"}, True))
        settle(recorder, lambda: recorder.written == 2)
    finally:
        recorder.close()
    state.open_store(url)
    try:
        assert [row.request_id for row in models.RoutingDecision.select()] == ["req_after"]
    finally:
        state.close_store()


def status(root: Path, endpoint: str) -> dict[str, Any]:
    result = cli(root, "status", "--json", "--endpoint", endpoint)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def route_no_route(client: Client) -> None:
    """A request no plugin fits: answered at once, and its decision handed to the recorder."""
    request = env.new_request("arbiter.route", "route")
    request["payload"] = {"text": NO_ROUTE_TEXT}
    reply = client.request("arbiter.route", request)
    assert not reply.ok and "NO_ROUTE" in reply.body.decode(), reply.body


def test_a_store_replaced_under_a_running_broker_shows_in_its_status(project: Path) -> None:
    process = start_broker(project)
    endpoint = process.endpoint  # type: ignore[attr-defined]
    try:
        with Client(endpoint, timeout=2, retries=0) as client:
            deadline = time.monotonic() + WAIT_S * 2
            while True:
                try:
                    client.mmi("mmi.service")
                    break
                except RequestTimeout:
                    assert process.poll() is None and time.monotonic() < deadline, "the broker did not start"
            route_no_route(client)
            wait(lambda: status(project, endpoint)["writers"]["decisions"]["written"] == 1)
            fold_the_log(db_path(project))
            replace_with_garbage(db_path(project))
            route_no_route(client)
            wait(lambda: status(project, endpoint)["writers"]["decisions"]["dropped"] == 1)
        decisions = status(project, endpoint)["writers"]["decisions"]
        assert decisions["written"] == 1 and decisions["queued"] == 0
        assert f"state store {db_path(project)}: " in decisions["errors"][-1]
        rendered = cli(project, "status", "--endpoint", endpoint).stdout
        assert "dropped=1" in rendered and "last error: rows not written: state store" in rendered
    finally:
        process.terminate()
        process.communicate(timeout=30)


def fold_the_log(path: Path) -> None:
    """Fold the write-ahead log into the file, as SQLite does as a broker runs: the pages are then
    in the file, where replacing it takes them away (pages still only in the log would be read
    over whatever file is put in its place)."""
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not blocked
    finally:
        con.close()


def wait(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
