"""The state store (Peewee: SQLite or PostgreSQL): the schema and its migrations, the decision
log and its retention, dead letters, chain runs, shared context, locks, the event log, and the
recorder process that writes for the broker.

May import: arbiter.wire.
"""
