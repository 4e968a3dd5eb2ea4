"""Deciding where a request goes: classify → rules → match → decide, and explaining why.

Pure functions and small classes over a snapshot; nothing here opens a socket or a database,
so the command line, the broker and the tests route the same way.

May import: arbiter.dsl, arbiter.project.
"""
