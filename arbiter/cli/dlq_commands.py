"""``arbiter dlq``: look at, replay and clear the requests the broker could not deliver.

``list`` and ``show`` say what failed and why, ``replay`` sends a letter again once the cause is
fixed (a worker is back, a limit raised), ``purge`` clears what is no longer wanted. Ids may be
shortened to any unique prefix, as with git. Exit codes: 0 ok, 1 an id not found or a replay
that got no reply (or an error reply), 2 usage.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import sys
from typing import Any

import click

from arbiter.sdk.client import Client, RequestTimeout
from arbiter.store import dead_letters as letters
from arbiter.store.replay import replay_letter, replay_outcome  # noqa: F401 - replay_letter: for callers of the command line module
from arbiter.wire import envelope as env

from .common import (
    Context,
    broker_endpoint,
    duration_value,
    echo_json,
    endpoint_option,
    json_option,
    pass_context,
    project_store,
)
from .tables import printable, table

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
SHOW_LIMIT = 4000  # characters of a frame shown to people; --json has everything


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def _short_time(iso: str | None) -> str:
    return "-" if iso is None else iso[:19].replace("T", " ")


@click.group("dlq")
def dlq() -> None:
    """Dead letters: requests the broker could not deliver, kept for inspection and replay.

    \b
      arbiter dlq list --service exec-automator
      arbiter dlq show 3f2a
      arbiter dlq replay 3f2a 9bc1
      arbiter dlq purge --older-than 7d --yes
    """


@dlq.command("list")
@click.option("--service", metavar="NAME", help="Only letters sent to this service.")
@click.option("--reason", type=click.Choice(letters.REASONS), help="Only letters that died for this reason.")
@click.option("--last", "last", default=50, show_default=True, help="How many of the newest letters.")
@json_option
@pass_context
def list_cmd(ctx: Context, service: str | None, reason: str | None, last: int, as_json: bool) -> None:
    """List dead letters, most recent failure first."""
    with project_store(ctx):
        rows = letters.list_letters(last, service=service, reason=reason)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no dead letters")
        return
    columns = ["ID", "SERVICE", "REASON", "COUNT", "FIRST", "LAST", "MESSAGE ID"]
    cells = [
        [
            row["id"][:12],
            row["service"],
            row["reason"],
            row["count"],
            _short_time(row["firstAt"]),
            _short_time(row["lastAt"]),
            (row["messageId"] or "-") + ("  (replayed)" if row["replayedAt"] else ""),
        ]
        for row in rows
    ]
    for line in table(columns, cells, numeric={"COUNT"}, limits={"SERVICE": 24, "REASON": 13}):
        click.echo(line)


def _frame_text(frame: dict[str, Any]) -> str:
    """A frame for people: pretty JSON, plain text, or (binary, or text that would upset a terminal) hex."""
    if frame["encoding"] != "utf-8":
        return "hex: " + letters.hex_preview(base64.b64decode(frame["data"]))
    if CONTROL.search(frame["data"]):
        return "hex: " + letters.hex_preview(frame["data"].encode("utf-8"))
    try:
        text = json.dumps(env.decode(frame["data"].encode()), indent=2, ensure_ascii=False)
    except ValueError:
        text = frame["data"]
    return text if len(text) <= SHOW_LIMIT else text[:SHOW_LIMIT] + f"\n... ({len(text) - SHOW_LIMIT} more characters)"


@dlq.command("show")
@click.argument("letter_id", metavar="ID")
@json_option
@pass_context
def show(ctx: Context, letter_id: str, as_json: bool) -> None:
    """Show one dead letter (ID or a unique prefix) with its body frames."""
    with project_store(ctx):
        try:
            letter = letters.get(letter_id)
        except LookupError as exc:
            _fail(str(exc))
            sys.exit(1)
    if as_json:
        echo_json(letter)
        return
    labels = {"id": "id", "messageId": "message id", "service": "service", "reason": "reason", "detail": "detail"}
    fields = [[f"{label}:", letter[key] or "-"] for key, label in labels.items()]
    fields += [["count:", letter["count"]], ["client:", letter["client"] or "-"]]
    fields += [["first:", letter["firstAt"]], ["last:", letter["lastAt"]]]
    fields += [["replayed:", letter["replayedAt"] or "never"]]
    for line in table(["FIELD", "VALUE"], fields, header=False):
        click.echo(line)
    if "bodyError" in letter:
        click.echo(f"\nbody: {letter['bodyError']}; `arbiter dlq purge {letter['id']}` removes it")
    for index, frame in enumerate(letter["body"]):
        click.echo(f"\nframe {index} ({frame['size']} bytes, {frame['encoding']}):")
        click.echo(printable(_frame_text(frame), keep="\n\t"))


def _replay_one(client: Client, letter_id: str) -> dict[str, Any]:
    """One letter's replay outcome, as a dict whether it worked or not."""
    return replay_outcome(client, letter_id, (RequestTimeout,))


@dlq.command("replay")
@click.argument("letter_ids", metavar="ID...", nargs=-1, required=True)
@endpoint_option
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for each attempt.")
@click.option("--retries", default=2, show_default=True, help="Attempts after the first (Lazy Pirate).")
@json_option
@pass_context
def replay(
    ctx: Context, letter_ids: tuple[str, ...], endpoint: str | None, timeout: float, retries: int, as_json: bool
) -> None:
    """Send dead letters again, through the broker, to the service each was meant for.

    An envelope keeps its messageId (workers recognise a request they already ran) with
    metadata.retryCount raised and a fresh expiresAt. Exit 1 when any letter is not found,
    gets no reply or gets an error reply.
    """
    url = broker_endpoint(ctx, endpoint)
    with project_store(ctx), Client(url, timeout=timeout, retries=retries, source="arbiter-dlq") as client:
        outcomes = [_replay_one(client, letter_id) for letter_id in letter_ids]
    if as_json:
        echo_json(outcomes)
    else:
        for outcome in outcomes:
            if "error" in outcome:
                _fail(f"{outcome['id']}: {outcome['error']}")
            else:
                status = "replayed" if outcome["ok"] else "replayed, error reply"
                click.echo(f"{outcome['id']}: {status} ({outcome['attempts']} attempt(s))")
                click.echo(json.dumps(outcome["reply"], indent=2, ensure_ascii=False))
    if not all(outcome["ok"] for outcome in outcomes):
        sys.exit(1)


@dlq.command("purge")
@click.argument("letter_ids", metavar="[ID]...", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every letter (narrowed by --service or --older-than).")
@click.option(
    "--older-than",
    "older_than",
    metavar="DURATION",
    callback=duration_value,
    help="Letters whose last failure is older than this, e.g. 7d, 12h, 30m.",
)
@click.option("--service", metavar="NAME", help="Only letters sent to this service.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_context
def purge(
    ctx: Context,
    letter_ids: tuple[str, ...],
    all_: bool,
    older_than: dt.timedelta | None,
    service: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete dead letters: the IDs given, or --all, or those --older-than a duration."""
    if not letter_ids and not all_ and older_than is None:
        raise click.UsageError("say what to purge: IDs, --all or --older-than DURATION")
    if letter_ids and all_:
        raise click.UsageError("give IDs or --all, not both")
    ids = list(letter_ids) or None
    with project_store(ctx):
        try:
            matching = letters.purge(ids, older_than, service, dry_run=True)
            if matching and not yes:
                click.confirm(f"delete {matching} dead letter(s)?", abort=True)
            purged = letters.purge(ids, older_than, service) if matching else 0
        except LookupError as exc:
            _fail(str(exc))
            sys.exit(1)
    if as_json:
        echo_json({"purged": purged})
    else:
        click.echo(f"purged {purged} dead letter(s)")
