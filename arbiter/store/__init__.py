"""The state store (Peewee: SQLite or PostgreSQL): the schema and its migrations, the decision
log, dead letters, and the recorder process that writes for the broker.

May import: arbiter.wire.
"""
