"""``arbiter chain``: chains read from the shipped project, runs read from a store filled here, and
the requests ``run``/``resume``/``cancel`` send, answered by a stand-in for the broker."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml
import zmq
from click.testing import CliRunner

from arbiter.cli import chain_commands, main
from arbiter.project.snapshot import build_snapshot
from arbiter.sdk.client import Client, RequestTimeout
from arbiter.sdk.demo_workers import demo_workers
from arbiter.sdk.worker import CommandError, Worker
from arbiter.store import database as state
from arbiter.store import runs
from arbiter.wire import envelope as env

T0 = 1_714_557_600.0  # 2024-05-01 10:00:00 UTC
SAGA_RUN = "run_0661a8ebd18f1e883bc45d9cf6b67ec4"
PARALLEL_RUN = "run_0661a8ebf976992ffbcb9414eedf527e"
HOSTILE = "quota \x1b[31mexceeded\x07"
ESCAPED = "quota \\x1b[31mexceeded\\x07"
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def chain_at(repo: Path, *args: str) -> Any:
    return cli("--root", str(repo), "chain", *args)


# -- list and show, on the shipped project ------------------------------------------------------


def test_list_names_every_chain_with_kind_parameters_steps_and_place(repo):
    result = chain_at(repo, "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "PARAMETERS", "STEPS", "SOURCE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"jira-delivery", "multi-plugin-analysis", "environment-deployment", "tenant-onboarding"}
    assert rows["multi-plugin-analysis"].split()[1:3] == ["parallel", "(wait-all)"]
    assert 'environment="development"' in rows["environment-deployment"]
    assert rows["environment-deployment"].split()[-2:] == ["5", f"{repo}/rules/chains.arb:19"]
    assert rows["jira-delivery"].split()[-3:] == ["issueKey", "4", f"{repo}/rules/chains.arb:4"]


def test_list_json(repo):
    result = chain_at(repo, "list", "--json")
    assert result.exit_code == 0, result.output
    chains = {item["name"]: item for item in json.loads(result.stdout)}
    assert chains["multi-plugin-analysis"]["onFailure"] == "wait-all"
    assert chains["tenant-onboarding"] == {
        "name": "tenant-onboarding",
        "kind": "saga",
        "onFailure": None,
        "parameters": [{"name": "tenantId", "default": None, "required": True}],
        "timeoutMs": None,
        "steps": 3,
        "source": f"{repo}/rules/chains.arb:31",
    }
    assert chains["environment-deployment"]["parameters"][0]["default"] == "development"


def test_show_prints_the_steps_as_a_tree(repo):
    result = chain_at(repo, "show", "jira-delivery")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith(f"chain jira-delivery: sequential, timeout 30m  {repo}/rules/chains.arb:4\n")
    assert "  parameters: $issueKey (required)\n" in text
    assert "    prepare: jira-orchestrator jira:prepare\n      with issueKey = $issueKey\n" in text
    assert "      timeout 30s, retry 2\n" in text
    assert "      with issueKey = prepare.issueKey\n" in text
    assert '      when work.status == "completed"\n' in text


def test_show_branches_as_if_else_and_compensations(repo):
    lines = chain_at(repo, "show", "environment-deployment").stdout.splitlines()
    assert '    if $environment == "production":' in lines
    assert "    else:" in lines
    assert lines.index("    else:") > lines.index("      deploy: ahling-command-center deploy-kubernetes")
    assert "      build-dev: ahling-command-center build-docker-image" in lines
    saga = chain_at(repo, "show", "tenant-onboarding").stdout
    assert "      compensate delete-tenant with tenantId = tenant.tenantId\n" in saga
    assert "      compensate destroy-tenant-resources with resourceIds = resources.createdResources\n" in saga


def test_show_json_tags_parameters_references_and_literals(repo):
    result = chain_at(repo, "show", "environment-deployment", "--json")
    assert result.exit_code == 0, result.output
    branch = json.loads(result.stdout)["items"][0]
    assert branch["if"] == '$environment == "production"'
    assert [step["step"] for step in branch["then"]] == ["build", "scan", "deploy"]
    assert [step["step"] for step in branch["else"]] == ["build-dev", "deploy-dev"]
    assert branch["then"][0]["with"] == {"tag": {"value": "prod"}} and branch["then"][0]["timeoutMs"] == 600_000
    saga = json.loads(chain_at(repo, "show", "tenant-onboarding", "--json").stdout)
    first = saga["items"][0]
    assert first["with"] == {"tenantId": {"param": "tenantId"}}
    assert first["compensate"] == {"command": "delete-tenant", "with": {"tenantId": {"ref": "tenant.tenantId"}}}


def test_a_fail_fast_parallel_chain_says_so(repo, tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "scan.arb").write_text(
        "chain quick-scan parallel fail-fast timeout 1m {\n"
        '  step components: frontend-powerhouse analyze-components with directory = "src"\n'
        '  step security: jira-orchestrator security-scan with scope = "all"\n'
        "}\n"
    )
    project = ["--root", str(tmp_path), "--plugins-dir", str(repo / "plugins"), "chain"]
    listed = cli(*project, "list")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[1].split()[:3] == ["quick-scan", "parallel", "(fail-fast)"]
    assert json.loads(cli(*project, "list", "--json").stdout)[0]["onFailure"] == "fail-fast"
    assert cli(*project, "show", "quick-scan").stdout.startswith("chain quick-scan: parallel (fail-fast), timeout 1m")
    assert '  join{{"join: fail-fast"}}' in cli(*project, "show", "quick-scan", "--mermaid").stdout


def test_show_unknown_chain_is_a_usage_error_with_did_you_mean(repo):
    result = chain_at(repo, "show", "jira-delivry")
    assert result.exit_code == 2
    assert "no chain named 'jira-delivry'" in result.stderr and "Did you mean 'jira-delivery'?" in result.stderr


def test_show_mermaid_and_json_together_is_a_usage_error(repo):
    assert chain_at(repo, "show", "jira-delivery", "--mermaid", "--json").exit_code == 2


def mermaid_of(repo: Path, name: str) -> list[str]:
    result = chain_at(repo, "show", name, "--mermaid")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart TD"
    return [line.strip() for line in lines[1:]]


def edges(lines: list[str]) -> list[str]:
    return [line for line in lines if "-->" in line or "-.->" in line]


def test_mermaid_saga_goes_forward_and_compensates_backwards_dashed(repo):
    lines = mermaid_of(repo, "tenant-onboarding")
    assert 's1["tenant<br/>lobbi-platform-manager create-tenant"]' in lines
    assert 'c1["undo tenant<br/>lobbi-platform-manager delete-tenant"]' in lines
    assert 'c2["undo realm<br/>lobbi-platform-manager remove-keycloak-config"]' in lines
    assert not any(line.startswith("c3") for line in lines)  # nothing after the last step can fail
    assert edges(lines) == [
        "start --> s1",
        "s1 --> s2",
        "s2 --> s3",
        "s3 --> finish",
        "s2 -.->|fails| c1",
        "c2 -.-> c1",
        "s3 -.->|fails| c2",
        "c1 -.-> undone",
    ]


def test_mermaid_if_else_is_a_diamond_whose_branches_join(repo):
    lines = mermaid_of(repo, "environment-deployment")
    assert 'b1{"$environment == #quot;production#quot;"}' in lines
    assert edges(lines) == [
        "start --> b1",
        "b1 -->|yes| s1",
        "s1 --> s2",
        "s2 --> s3",
        "b1 -->|no| s4",
        "s4 --> s5",
        "s3 --> finish",
        "s5 --> finish",
    ]


def test_mermaid_parallel_fans_out_and_joins(repo):
    lines = mermaid_of(repo, "multi-plugin-analysis")
    assert 'join{{"join: wait-all"}}' in lines
    fan = ["start --> s1", "start --> s2", "start --> s3"]
    joined = ["s1 --> join", "s2 --> join", "s3 --> join"]
    assert edges(lines) == fan + joined + ["join --> finish"]


def test_mermaid_puts_a_steps_condition_in_its_node(repo):
    lines = mermaid_of(repo, "jira-delivery")
    assert 's3["pr<br/>jira-orchestrator jira:pr<br/>when work.status == #quot;completed#quot;"]' in lines
    assert edges(lines) == ["start --> s1", "s1 --> s2", "s2 --> s3", "s3 --> s4", "s4 --> finish"]


# -- runs, from a store filled here -------------------------------------------------------------


def _step(run: str, order: int, name: str, status: str, **fields: Any) -> dict[str, Any]:
    what = fields.pop("what", "step")
    meta = {"tries": fields.pop("tries", 1), "ms": fields.pop("ms", 100.0), "args": {}}
    row = {"id": f"{run}:{name}{'/undo' if what == 'compensation' else ''}", "run": run, "name": name}
    row |= {"what": what, "status": status, "order": order, "plugin": "lobbi-platform-manager", "command": name}
    row |= {"result": None, "error": None, "meta": meta, "created": T0 + order, "updated": T0 + order + 0.5}
    return row | {"completed": T0 + order + 0.5} | fields


SAGA_ROWS = [
    {
        "id": SAGA_RUN,
        "run": None,
        "name": "tenant-onboarding",
        "what": "chain",
        "status": "compensated",
        "error": f"step resources failed: WORKER_ERROR: {HOSTILE}",
        "meta": {"params": {"tenantId": "acme"}, "chainKind": "saga", "resumed": 1, "traceId": "0af76519"},
        "created": T0,
        "updated": T0 + 4.25,
        "completed": T0 + 4.25,
    },
    _step(SAGA_RUN, 0, "tenant", "completed", command="create-tenant", ms=120.4),
    _step(SAGA_RUN, 1, "realm", "completed", command="configure-keycloak"),
    _step(
        SAGA_RUN,
        2,
        "resources",
        "failed",
        command="deploy-tenant-resources",
        tries=3,
        ms=2900.0,
        error=f"WORKER_ERROR: {HOSTILE}",
        plugin="ahling-command-center",
    ),  # fmt: skip
    _step(SAGA_RUN, 3, "realm", "compensated", what="compensation", command="remove-keycloak-config"),
    _step(SAGA_RUN, 4, "tenant", "compensated", what="compensation", command="delete-tenant"),
]
PARALLEL_ROWS = [
    {
        "id": PARALLEL_RUN,
        "run": None,
        "name": "multi-plugin-analysis",
        "what": "chain",
        "status": "completed",
        "result": {"findings": 0},
        "meta": {"params": {}, "chainKind": "parallel"},
        "created": T0 + 100,
        "updated": T0 + 101.5,
        "completed": T0 + 101.5,
    },
    *[_step(PARALLEL_RUN, i, name, "completed") for i, name in enumerate(("components", "infrastructure"))],
]


def write_rows(root: Path, rows: list[dict[str, Any]]) -> None:
    state.open_store("sqlite:///.arbiter/state.db", root)
    try:
        runs.write_now(rows)
    finally:
        state.close_store()


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    """A project whose store holds a compensated saga run and, newer, a completed parallel run."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "state.yaml").write_text("database: sqlite:///.arbiter/state.db\n")
    write_rows(tmp_path, SAGA_ROWS + PARALLEL_ROWS)
    return tmp_path


def test_runs_lists_newest_first_with_steps_done_and_time(store_root):
    result = chain_at(store_root, "runs")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "CHAIN", "STATUS", "STEPS", "STARTED", "TOOK"]
    assert lines[1].split() == [
        PARALLEL_RUN,
        "multi-plugin-analysis",
        "completed",
        "2/2",
        "2024-05-01",
        "10:01:40",
        "1.5s",
    ]
    assert lines[2].split() == [SAGA_RUN, "tenant-onboarding", "compensated", "2/3", "2024-05-01", "10:00:00", "4.2s"]


def test_runs_count_the_steps_the_projects_chain_takes(repo, store_root):
    shutil.copytree(repo / "rules", store_root / "rules")
    project = ["--plugins-dir", str(repo / "plugins")]
    listed = json.loads(cli("--root", str(store_root), *project, "chain", "runs", "--json").stdout)
    assert [(r["stepsDone"], r["stepsTotal"]) for r in listed] == [(2, 3), (2, 3)]  # two of three ran
    branching = build_snapshot(repo).rules.chains["environment-deployment"].items
    assert chain_commands.steps_to_take(branching, {"build"}) == 3
    assert chain_commands.steps_to_take(branching, {"build-dev"}) == 2
    assert chain_commands.steps_to_take(branching, set()) == 3  # not reached yet: the longer branch


def test_runs_filters_limits_and_prints_json(store_root):
    only = chain_at(store_root, "runs", "--chain", "tenant-onboarding", "--json")
    assert only.exit_code == 0, only.output
    (run,) = json.loads(only.stdout)
    assert run["runId"] == SAGA_RUN and (run["stepsDone"], run["stepsTotal"]) == (2, 3)
    assert run["params"] == {"tenantId": "acme"} and run["resumed"] == 1 and "steps" not in run
    assert [r["runId"] for r in json.loads(chain_at(store_root, "runs", "--last", "1", "--json").stdout)] == [
        PARALLEL_RUN
    ]
    none = chain_at(store_root, "runs", "--chain", "jira-delivery")
    assert none.exit_code == 0 and none.stdout.strip() == "no runs of chain 'jira-delivery'"


def test_status_by_prefix_shows_the_run_and_each_step_escaped(store_root):
    result = chain_at(store_root, "status", "run_0661a8ebd")
    assert result.exit_code == 1, result.output  # compensated: the run did not complete
    out = result.stdout
    assert not CONTROLS.search(out)
    fields = dict(line.split(None, 1) for line in out.split("\n\n")[0].splitlines())
    assert fields == {
        "run:": SAGA_RUN,
        "chain:": "tenant-onboarding (saga)",
        "status:": "compensated",
        "params:": '{"tenantId": "acme"}',
        "started:": "2024-05-01 10:00:00",
        "took:": "4.2s",
        "resumed:": "1 time",
        "trace:": "0af76519",
    }
    table = out.split("\n\n")[1].splitlines()
    assert table[0].split() == ["STEP", "STATUS", "PLUGIN", "COMMAND", "TRIES", "MS", "ERROR"]
    assert table[1].split() == ["tenant", "completed", "lobbi-platform-manager", "create-tenant", "1", "120", "-"]
    assert table[3].split()[:6] == [
        "resources",
        "failed",
        "ahling-command-center",
        "deploy-tenant-resources",
        "3",
        "2900",
    ]
    assert table[3].endswith(f"WORKER_ERROR: {ESCAPED}")
    assert table[4].split()[:3] == ["realm", "(undo)", "compensated"]
    assert out.rstrip().endswith(f"error: step resources failed: WORKER_ERROR: {ESCAPED}")


def test_status_of_a_completed_run_with_its_result_and_json(store_root):
    result = chain_at(store_root, "status", PARALLEL_RUN)
    assert result.exit_code == 0, result.output
    assert "resumed:  no" in result.stdout and "chain:    multi-plugin-analysis (parallel)" in result.stdout
    assert result.stdout.rstrip().endswith('result:\n{\n  "findings": 0\n}')
    data = json.loads(chain_at(store_root, "status", "run_0661a8ebf", "--json").stdout)
    assert data["runId"] == PARALLEL_RUN and data["status"] == "completed" and data["kind"] == "parallel"
    assert [(s["name"], s["what"], s["status"], s["tries"]) for s in data["steps"]] == [
        ("components", "step", "completed", 1),
        ("infrastructure", "step", "completed", 1),
    ]
    hostile = json.loads(chain_at(store_root, "status", SAGA_RUN, "--json").stdout)
    assert hostile["steps"][2]["error"] == f"WORKER_ERROR: {HOSTILE}"  # JSON carries the text as it was


def test_status_of_an_unknown_run_says_so_in_one_line(store_root):
    result = chain_at(store_root, "status", "ffff")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "error: no chain run with id 'ffff'; see `arbiter chain runs`\n"
    hostile = chain_at(store_root, "status", "\x1b[2J")
    assert hostile.exit_code == 1 and "\\x1b[2J" in hostile.stderr and not CONTROLS.search(hostile.stderr)


RUNNING_RUN = "run_0661a8ec0d2e4a5b6c7d8e9fa0b1c2d3"


def _running_rows(status: str, steps: list[tuple[str, str]]) -> list[dict[str, Any]]:
    run = {"id": RUNNING_RUN, "run": None, "name": "jira-delivery", "what": "chain", "status": status}
    run |= {"meta": {"params": {"issueKey": "ABC-1"}, "chainKind": "sequential"}, "created": T0, "updated": T0 + 9}
    run |= {"completed": T0 + 9 if status == "completed" else None}
    return [run] + [_step(RUNNING_RUN, i, name, st, plugin="jira-orchestrator") for i, (name, st) in enumerate(steps)]


def test_status_follow_prints_changes_until_the_run_ends(store_root, monkeypatch):
    """Each reading of the store is followed by the run's next change, as the broker would write it."""
    monkeypatch.setattr(chain_commands, "FOLLOW_POLL_S", 0.01)
    write_rows(store_root, _running_rows("running", [("prepare", "running")]))
    changes = [
        _running_rows("running", [("prepare", "completed"), ("work", "running")]),
        _running_rows("completed", [("prepare", "completed"), ("work", "completed")]),
    ]
    read = chain_commands._find_run

    def read_then_change(run_id: str) -> dict[str, Any]:
        found = read(run_id)
        if changes:
            runs.write_now(changes.pop(0))
        return found

    monkeypatch.setattr(chain_commands, "_find_run", read_then_change)
    result = chain_at(store_root, "status", "run_0661a8ec", "--follow", "--timeout", "20")
    assert result.exit_code == 0, result.output
    followed = result.stdout.split("(at most 20s; Ctrl-C stops)\n")[1].splitlines()
    assert followed[:4] == [
        "10:00:00  prepare: completed (1 try, 100ms)",
        "10:00:01  work: running (1 try, 100ms)",
        "10:00:01  work: completed (1 try, 100ms)",
        "10:00:09  run: completed",
    ]
    assert followed[4] == "run completed, took 9.0s"


def test_status_follow_gives_up_after_its_timeout(store_root, monkeypatch):
    monkeypatch.setattr(chain_commands, "FOLLOW_POLL_S", 0.05)
    write_rows(store_root, _running_rows("running", [("prepare", "running")]))
    result = chain_at(store_root, "status", RUNNING_RUN, "--follow", "--timeout", "0.3")
    assert result.exit_code == 1
    assert result.stderr == "error: the run is still running after 0.3s\n"


# -- run, resume, cancel: what they send and how they read the answer ----------------------------


def test_run_refuses_a_param_without_equals(repo):
    result = chain_at(repo, "run", "jira-delivery", "--param", "issueKey")
    assert result.exit_code == 2
    assert "'issueKey' is not K=V" in result.stderr
    assert chain_at(repo, "run", "jira-delivery", "--param", "a=1", "--param", "a=2").exit_code == 2
    assert chain_at(repo, "run", "jira-delivery", "--param", "=1").exit_code == 2


@contextlib.contextmanager
def stand_in_broker(answer: Callable[[dict[str, Any]], dict[str, Any]]) -> Iterator[tuple[str, list[dict]]]:
    """A ROUTER that answers ``arbiter.chain`` requests as ``answer`` says, keeping what it got."""
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    received: list[dict[str, Any]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if router.poll(50):
                identity, empty, protocol, service, body = router.recv_multipart()
                received.append(json.loads(body))
                reply = env.encode(answer(received[-1]))
                router.send_multipart([identity, empty, protocol, service, reply])

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield endpoint, received
    finally:
        stop.set()
        server.join()
        router.close()


def _run(status: str, error: str | None = None) -> dict[str, Any]:
    steps = [
        {"name": "prepare", "status": "completed", "plugin": "jira-orchestrator", "command": "jira:prepare"},
        {"name": "work", "status": status, "plugin": "jira-orchestrator", "command": "jira:work"},
    ]
    steps = [step | {"tries": 1, "ms": 12.3, "result": None, "error": None, "what": "step"} for step in steps]
    steps[1]["error"] = error
    result = {"pr": "https://git.example/pr/1"} if status == "completed" else None
    return {"runId": RUNNING_RUN, "chain": "jira-delivery", "status": status, "result": result, "error": error} | {
        "traceId": "0af76519",
        "steps": steps,
    }


def test_run_sends_the_parameters_and_prints_the_run(repo):
    with stand_in_broker(lambda req: env.success_reply(req, "arbiter.chain", _run("completed"))) as (url, got):
        params = ["--param", "issueKey=ABC-1", "--param", "n=5", "--param", 'quoted="5"', "--param", "flags=[1, 2]"]
        result = chain_at(repo, "run", "jira-delivery", *params, "--endpoint", url, "--timeout", "10")
    assert result.exit_code == 0, result.output
    assert got[0]["destination"] == "arbiter.chain"
    assert got[0]["payload"] == {
        "chain": "jira-delivery",
        "params": {"issueKey": "ABC-1", "n": 5, "quoted": "5", "flags": [1, 2]},
        "wait": True,
    }
    lines = result.stdout.splitlines()
    assert lines[0] == f"run {RUNNING_RUN}  jira-delivery  completed  trace 0af76519"
    assert lines[1].split() == ["STEP", "STATUS", "PLUGIN", "COMMAND", "TRIES", "MS"]
    assert lines[2].split() == ["prepare", "completed", "jira-orchestrator", "jira:prepare", "1", "12"]
    assert result.stdout.endswith('result:\n{\n  "pr": "https://git.example/pr/1"\n}\n')


def test_a_run_that_failed_and_a_broker_error_exit_1(repo):
    failed = _run("failed", f"WORKER_ERROR: {HOSTILE}") | {"error": f"step work failed: {HOSTILE}"}
    with stand_in_broker(lambda req: env.success_reply(req, "arbiter.chain", failed)) as (url, _):
        result = chain_at(repo, "run", "jira-delivery", "--param", "issueKey=A", "--endpoint", url, "--timeout", "10")
    assert result.exit_code == 1
    assert result.stdout.rstrip().endswith(f"error: step work failed: {ESCAPED}")
    assert not CONTROLS.search(result.stdout)
    refusal = lambda req: env.error_reply(req, "arbiter.chain", "UNKNOWN_CHAIN", "no chain named 'jira'")  # noqa: E731
    with stand_in_broker(refusal) as (url, _):
        result = chain_at(repo, "run", "jira", "--endpoint", url, "--timeout", "10")
        as_json = chain_at(repo, "run", "jira", "--endpoint", url, "--timeout", "10", "--json")
    assert result.exit_code == 1 and result.stderr == "error: UNKNOWN_CHAIN: no chain named 'jira'\n"
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == {"error": {"code": "UNKNOWN_CHAIN", "message": "no chain named 'jira'"}}


def test_run_no_wait_prints_the_run_id(repo):
    started = {"runId": RUNNING_RUN, "chain": "multi-plugin-analysis", "status": "running", "steps": []}
    with stand_in_broker(lambda req: env.success_reply(req, "arbiter.chain", started)) as (url, got):
        result = chain_at(repo, "run", "multi-plugin-analysis", "--no-wait", "--endpoint", url)
    assert result.exit_code == 0, result.output
    assert got[0]["payload"] == {"chain": "multi-plugin-analysis", "params": {}, "wait": False}
    assert result.stdout == f"{RUNNING_RUN}\n"
    assert f"arbiter chain status {RUNNING_RUN} --follow" in result.stderr


def test_run_without_an_answer_says_so(repo):
    with stand_in_broker(lambda req: {}) as (url, _):
        pass  # nothing listens any more
    result = chain_at(repo, "run", "jira-delivery", "--endpoint", url, "--timeout", "0.2")
    assert result.exit_code == 1 and "no reply from service 'arbiter.chain'" in result.stderr


def test_resume_and_cancel_send_the_full_id_of_a_prefix(store_root):
    write_rows(store_root, _running_rows("failed", [("prepare", "failed")]))
    with stand_in_broker(lambda req: env.success_reply(req, "arbiter.chain", _run("completed"))) as (url, got):
        resumed = chain_at(store_root, "resume", "run_0661a8ec", "--endpoint", url, "--timeout", "10")
        cancelled = chain_at(store_root, "cancel", "run_0661a8ec", "--endpoint", url, "--json")
        unknown = chain_at(store_root, "cancel", "abc", "--endpoint", url)
    assert resumed.exit_code == 0, resumed.output
    assert cancelled.exit_code == 0, cancelled.output
    assert [request["payload"] for request in got] == [
        {"resume": RUNNING_RUN},
        {"cancel": RUNNING_RUN},
        {"cancel": "abc"},
    ]
    assert resumed.stdout.startswith(f"run {RUNNING_RUN}  jira-delivery  completed")
    assert json.loads(cancelled.stdout)["runId"] == RUNNING_RUN
    assert unknown.exit_code == 0


# -- against a real broker -----------------------------------------------------------------------


def _free_endpoint() -> str:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


class Ahling:
    """ahling-command-center as these tests want it: ``deploy-kubernetes`` fails while ``failing``
    is set, ``analyze-infrastructure`` takes its time while ``slow`` is set, and
    ``deploy-tenant-resources`` always refuses (so a saga compensates)."""

    def __init__(self, endpoint: str) -> None:
        self.failing, self.slow = threading.Event(), threading.Event()
        self.worker = Worker(endpoint, "ahling-command-center", credit=4)
        self.worker.command("build-docker-image")(lambda params, _: {"image": f"app:{params.get('tag')}"})
        self.worker.command("deploy-kubernetes")(self.deploy)
        self.worker.command("analyze-infrastructure")(self.analyze)
        self.worker.command("deploy-tenant-resources")(self.refuse)

    def deploy(self, params: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
        if self.failing.is_set():
            raise CommandError("BAD_REQUEST", "the cluster refuses: quota \x1b[31mexceeded")
        return {"namespace": params.get("namespace")}

    def analyze(self, params: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
        if self.slow.is_set():
            time.sleep(3)
        return {"target": params.get("directory")}

    def refuse(self, params: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
        raise CommandError("BAD_PARAMETERS", f"no room for tenant {params.get('tenantId')}")


@pytest.fixture(scope="module")
def live(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, Ahling]]:
    """A broker on free ports over a copy of the shipped project, demo workers for every plugin
    but ahling-command-center, and :class:`Ahling` for that one."""
    root = tmp_path_factory.mktemp("chains")
    for part in ("plugins", "rules", "configs"):
        shutil.copytree(repo / part, root / part)
    frontend, pub, sub = (_free_endpoint() for _ in range(3))
    config = yaml.safe_load((root / "configs/broker.yaml").read_text())
    config |= {"endpoints": {"frontend": frontend, "events_pub": pub, "events_sub": sub}, "deciders": 0}
    config["reload"] = {**config.get("reload", {}), "watch": False}
    (root / "configs/broker.yaml").write_text(yaml.safe_dump(config))
    log = open(root / "broker.log", "wb")
    broker = subprocess.Popen(
        [sys.executable, "-m", "arbiter", "--root", str(root), "broker"], stdout=log, stderr=subprocess.STDOUT
    )
    plugins = [p for p in build_snapshot(root).plugins.values() if p.name != "ahling-command-center"]
    ahling = Ahling(frontend)
    workers = [*demo_workers(plugins, frontend, delay=0.0), ahling.worker]
    try:
        for worker in workers:
            worker.start()
        with Client(frontend, timeout=0.5, retries=0) as client:
            deadline = time.monotonic() + 30
            while not _serving(client, [w.service for w in workers]):
                assert time.monotonic() < deadline, (root / "broker.log").read_text()[-2000:]
                time.sleep(0.1)
        yield root, frontend, ahling
    finally:
        for worker in workers:
            worker.stop(timeout=5)
        broker.terminate()
        broker.wait(timeout=20)
        log.close()


def _serving(client: Client, services: list[str]) -> bool:
    """Every service has a worker on the broker (False while the broker is not up yet)."""
    try:
        return all(client.has_service(service) for service in services)
    except RequestTimeout:
        return False


def stored(root: Path, run_id: str, status: str) -> dict[str, Any]:
    """The run once the store holds it with ``status`` (the broker's recorder writes in batches)."""
    deadline = time.monotonic() + 20
    while True:
        result = chain_at(root, "status", run_id, "--json")
        data = json.loads(result.stdout) if result.stdout else {}
        if data.get("status") == status or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


@pytest.mark.e2e
def test_a_chain_runs_through_the_broker_and_is_read_back_from_the_store(live):
    root, frontend, _ = live
    result = chain_at(root, "run", "multi-plugin-analysis", "--endpoint", frontend)
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0].split()
    assert first[0] == "run" and first[2:4] == ["multi-plugin-analysis", "completed"]
    run_id = first[1]
    assert stored(root, run_id, "completed")["kind"] == "parallel"
    shown = chain_at(root, "status", run_id)
    assert shown.exit_code == 0, shown.output
    assert "chain:    multi-plugin-analysis (parallel)" in shown.stdout
    listed = json.loads(chain_at(root, "runs", "--chain", "multi-plugin-analysis", "--json").stdout)
    assert listed[0]["runId"] == run_id and (listed[0]["stepsDone"], listed[0]["stepsTotal"]) == (3, 3)


@pytest.mark.e2e
def test_a_saga_that_fails_is_compensated_and_cannot_be_resumed(live):
    root, frontend, _ = live
    result = chain_at(root, "run", "tenant-onboarding", "--param", "tenantId=acme", "--endpoint", frontend)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[2:4] == ["tenant-onboarding", "compensated"]
    steps = [line.split()[:3] for line in lines[2:7]]
    assert [s[:2] for s in steps[:3]] == [["tenant", "completed"], ["realm", "completed"], ["resources", "failed"]]
    assert steps[3:] == [["realm", "(undo)", "compensated"], ["tenant", "(undo)", "compensated"]]
    resumed = chain_at(root, "resume", lines[0].split()[1], "--endpoint", frontend)
    assert resumed.exit_code == 1 and "RUN_FINISHED" in resumed.stderr


@pytest.mark.e2e
def test_a_failed_run_is_resumed_from_its_failed_step(live):
    root, frontend, ahling = live
    ahling.failing.set()
    try:
        failed = chain_at(root, "run", "environment-deployment", "--endpoint", frontend, "--json")
    finally:
        ahling.failing.clear()
    assert failed.exit_code == 1, failed.output
    run = json.loads(failed.stdout)
    assert run["status"] == "failed" and "quota \x1b[31mexceeded" in run["error"]
    stored(root, run["runId"], "failed")
    resumed = chain_at(root, "resume", run["runId"][:-4], "--endpoint", frontend)
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.splitlines()[0].split()[1:4] == [run["runId"], "environment-deployment", "completed"]
    shown = stored(root, run["runId"], "completed")
    assert shown["resumed"] == 1
    assert "resumed:  1 time" in chain_at(root, "status", run["runId"]).stdout


@pytest.mark.e2e
def test_a_run_started_without_waiting_can_be_cancelled(live):
    root, frontend, ahling = live
    ahling.slow.set()
    try:
        started = chain_at(root, "run", "multi-plugin-analysis", "--no-wait", "--endpoint", frontend)
        assert started.exit_code == 0, started.output
        run_id = started.stdout.strip()
        cancelled = chain_at(root, "cancel", run_id, "--endpoint", frontend, "--json")
    finally:
        ahling.slow.clear()
    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    again = chain_at(root, "cancel", run_id, "--endpoint", frontend)
    assert again.exit_code == 1 and "UNKNOWN_RUN" in again.stderr
