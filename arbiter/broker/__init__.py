"""The broker daemon: the loop that forwards MDP messages between clients and workers, worker
bookkeeping, Arbiter's own services, routed dispatch with its resilience, dead letters, the
event bus, hot reload, and running it all as a process.

May import: arbiter.dsl, arbiter.project, arbiter.routing, arbiter.store, arbiter.wire.
"""
