"""The seed's central schema, and what Arbiter adds to it, as Peewee models.

JSON columns are text holding JSON, so the same models work on SQLite and PostgreSQL. The models
are bound to :data:`database`, a proxy :func:`arbiter.store.database.open_store` points at the
store it opens.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from typing import Any

import orjson
import peewee as pw

database = pw.DatabaseProxy()


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    """A random 128-bit row id (the PRNG, not a system call). Random, so that a few leading
    characters tell rows apart: people pick dead letters by id prefix, like git commits."""
    return f"{random.getrandbits(128):032x}"


def ordered_id() -> str:
    """A 128-bit row id that sorts by creation time (microseconds since the epoch, then 72 bits
    from the PRNG), for the decision log, written once per routed request. Inserts then append
    to the end of the primary-key index; random ids landed all over the B-tree, so each row
    dirtied its own page (docs/PERFORMANCE.md)."""
    return f"{time.time_ns() // 1000:014x}{random.getrandbits(72):018x}"


class JSONField(pw.TextField):
    """JSON stored as text: portable across SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()

    def python_value(self, value: Any) -> Any:
        return None if value is None else orjson.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Meta(BaseModel):
    key = pw.CharField(primary_key=True)
    value = pw.TextField()

    class Meta:
        table_name = "arbiter_meta"


class PluginRecord(BaseModel):
    id = pw.CharField(primary_key=True)
    name = pw.CharField(unique=True)
    version = pw.CharField()
    status = pw.CharField(constraints=[pw.Check("status IN ('active', 'inactive', 'error')")])
    health_score = pw.FloatField(default=1.0)
    last_heartbeat = pw.DateTimeField(null=True)
    metadata = JSONField(null=True)
    created_at = pw.DateTimeField(default=now)
    updated_at = pw.DateTimeField(default=now)

    class Meta:
        table_name = "plugins"


# The seed's task states, and what chain runs and their steps add (version 4 of the schema).
TASK_STATES = (
    "pending",
    "queued",
    "running",
    "completed",
    "failed",
    "cancelled",
    "skipped",
    "timed-out",
    "compensating",
    "compensated",
    "compensation-failed",
)
TASK_STATUS_CHECK = "status IN ({})".format(", ".join(f"'{state}'" for state in TASK_STATES))


class Task(BaseModel):
    """The seed's tasks: a chain run is one (``parent_task_id`` null) and each of its steps one
    more, whose ``parent_task_id`` is the run's id (:mod:`arbiter.store.runs`)."""

    id = pw.CharField(primary_key=True, default=new_id)
    session_id = pw.CharField(null=True)
    parent_task_id = pw.CharField(null=True)
    title = pw.TextField()
    description = pw.TextField(null=True)
    status = pw.CharField(index=True, constraints=[pw.Check(TASK_STATUS_CHECK)])
    priority = pw.IntegerField(default=5)
    assigned_plugin = pw.CharField(null=True, index=True)
    assigned_agent = pw.CharField(null=True)
    result = JSONField(null=True)
    error = pw.TextField(null=True)
    metadata = JSONField(null=True)
    created_at = pw.DateTimeField(default=now)
    updated_at = pw.DateTimeField(default=now)
    completed_at = pw.DateTimeField(null=True)
    # A chain run's lease (schema 7): the broker that runs it and until when, unless renewed; on a
    # store shared by several brokers another takes the run over once it expired (runs.claim).
    lease_owner = pw.CharField(null=True)
    lease_expires = pw.DateTimeField(null=True)
    # The messageId of the request that started a chain run (schema 8), unique where set: a start
    # sent again (a client's retry, maybe through another broker) answers with this run.
    message_id = pw.CharField(null=True)

    class Meta:
        table_name = "tasks"


Task.add_index(Task.index(Task.message_id, unique=True, where=Task.message_id.is_null(False), name="tasks_message_id"))


class AgentRecord(BaseModel):
    id = pw.CharField(primary_key=True)
    plugin_id = pw.CharField()
    name = pw.CharField()
    category = pw.CharField(null=True)
    status = pw.CharField(index=True, constraints=[pw.Check("status IN ('available', 'busy', 'offline')")])
    capabilities = JSONField(null=True)
    metrics = JSONField(null=True)
    created_at = pw.DateTimeField(default=now)
    updated_at = pw.DateTimeField(default=now)

    class Meta:
        table_name = "agents"
        indexes = ((("plugin_id", "name"), True),)


class SharedContext(BaseModel):
    """Shared context entries (:mod:`arbiter.store.context`): ``context_type`` is the entry's scope
    and ``owner_plugin`` its owner."""

    id = pw.CharField(primary_key=True, default=new_id)
    context_type = pw.CharField(index=True)
    key = pw.CharField()
    value = JSONField()
    owner_plugin = pw.CharField(null=True)
    access_level = pw.CharField(
        default="public", constraints=[pw.Check("access_level IN ('public', 'protected', 'private')")]
    )
    version = pw.IntegerField(default=1)
    created_at = pw.DateTimeField(default=now)
    updated_at = pw.DateTimeField(default=now)
    expires_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "shared_context"
        indexes = ((("context_type", "key"), True),)


class RoutingDecision(BaseModel):
    id = pw.CharField(primary_key=True, default=ordered_id)
    request_id = pw.CharField(index=True)
    classification = JSONField(null=True)
    primary_plugin = pw.CharField(null=True)
    fallback_plugins = JSONField(null=True)
    collaboration_plan = JSONField(null=True)
    execution_strategy = pw.CharField(null=True)
    estimated_cost = pw.FloatField(null=True)
    estimated_duration = pw.IntegerField(null=True)
    actual_cost = pw.FloatField(null=True)
    actual_duration = pw.IntegerField(null=True)
    success = pw.BooleanField(null=True)
    created_at = pw.DateTimeField(default=now, index=True)
    completed_at = pw.DateTimeField(null=True)
    # Version 2: what explain and replays need beyond the seed's columns.
    user_input = pw.TextField(null=True)
    capability_scores = JSONField(null=True)
    agent_team = JSONField(null=True)
    rules_hash = pw.CharField(null=True)
    origin = pw.CharField(null=True)  # cli | broker
    timings = JSONField(null=True)
    outcome = JSONField(null=True)  # dispatch steps: primary, fallbacks, cache, dead letter
    # Version 6: the W3C trace the request belonged to (docs/TRACING.md).
    trace_id = pw.CharField(null=True, index=True)

    class Meta:
        table_name = "routing_decisions"


class DistributedLock(BaseModel):
    """One holder's lease on a resource (version 5): several readers may share a resource, so the
    key is the pair. ``token`` is the fencing token the grant drew from :class:`LockFence`."""

    resource_id = pw.CharField()
    lock_holder = pw.CharField()
    lock_type = pw.CharField(constraints=[pw.Check("lock_type IN ('read', 'write')")])
    token = pw.BigIntegerField()
    acquired_at = pw.DateTimeField(default=now)
    expires_at = pw.DateTimeField()
    metadata = JSONField(null=True)

    class Meta:
        table_name = "distributed_locks"
        primary_key = pw.CompositeKey("resource_id", "lock_holder")


class LockFence(BaseModel):
    """The fencing counter of a resource (version 5): the last token granted on it. Rows are never
    deleted, so tokens keep growing across expiry and release, and a lease that lapsed is told
    apart from the one granted after it."""

    resource_id = pw.CharField(primary_key=True)
    last_token = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "lock_fences"


class SequenceField(pw.BigAutoField):
    """An auto-increment key that is never given twice. SQLite, without AUTOINCREMENT, gives the
    highest number again once that row is deleted (a log pruned to nothing would restart at 1 and
    readers following it by number would skip what came next); PostgreSQL sequences never do."""

    def ddl(self, ctx: Any) -> Any:
        node = super().ddl(ctx)
        bound = self.model._meta.database
        if isinstance(getattr(bound, "obj", bound), pw.SqliteDatabase):
            return pw.NodeList((node, pw.SQL("AUTOINCREMENT")))
        return node


class Event(BaseModel):
    """The event log (version 5): append-only, numbered in the order events were committed
    (:mod:`arbiter.store.events`)."""

    seq = SequenceField()
    topic = pw.CharField(index=True)
    event_type = pw.CharField()
    aggregate_type = pw.CharField()
    aggregate_id = pw.CharField(max_length=512)  # a context entry's is its scope and key
    payload = JSONField()
    metadata = JSONField(null=True)
    timestamp = pw.DateTimeField(default=now)

    class Meta:
        table_name = "events"
        indexes = ((("aggregate_type", "aggregate_id"), False),)


class DeadLetter(BaseModel):
    """A request the broker could not deliver, kept with its frames so it can be replayed."""

    id = pw.CharField(primary_key=True, default=new_id)
    message_id = pw.CharField(null=True, index=True)
    service = pw.CharField(index=True)
    reason = pw.CharField()
    detail = pw.TextField(null=True)
    count = pw.IntegerField(default=1)
    body = pw.BlobField()  # the request body frames, JSON list of latin-1 strings
    client = pw.CharField(null=True)
    first_at = pw.DateTimeField(default=now)
    last_at = pw.DateTimeField(default=now, index=True)
    replayed_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "dead_letters"


class DeadLetterRepeat(BaseModel):
    """A letter the broker handed in that was counted on an earlier one (same message, service and
    reason), kept by the id the broker gave it: a batch the broker sends again after its recorder
    died is then recognised and not counted twice. Only needed for a while (a day)."""

    id = pw.CharField(primary_key=True)
    letter = pw.ForeignKeyField(
        DeadLetter, column_name="letter_id", backref="repeats", on_delete="CASCADE", on_update="CASCADE"
    )
    at = pw.DateTimeField(default=now, index=True)

    class Meta:
        table_name = "dead_letter_repeats"


SEED_MODELS = [PluginRecord, Task, AgentRecord, SharedContext, RoutingDecision, DistributedLock, Event]
MODELS = [Meta, *SEED_MODELS, DeadLetter, DeadLetterRepeat, LockFence]
V2_DECISION_COLUMNS = ("user_input", "capability_scores", "agent_team", "rules_hash", "origin", "timings", "outcome")
