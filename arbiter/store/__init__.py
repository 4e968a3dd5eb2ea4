"""The state store (Peewee: SQLite or PostgreSQL): the schema and its migrations, the decision
log and its retention, dead letters, and the recorder process that writes for the broker.

May import: arbiter.wire.
"""
