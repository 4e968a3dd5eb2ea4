"""Talking to a broker from Python: the client (Lazy Pirate), the worker, and demo workers for
the shipped plugins.

May import: arbiter.project, arbiter.state, arbiter.wire.
"""
