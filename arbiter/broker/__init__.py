"""The broker daemon: the loop that forwards MDP messages between clients and workers, worker
bookkeeping, Arbiter's own services, routed dispatch with its resilience, dead letters, the
event bus, hot reload, and running it all as a process.

The decider processes the broker starts are SDK workers.

May import: arbiter.dsl, arbiter.orchestration, arbiter.project, arbiter.routing, arbiter.sdk, arbiter.security,
arbiter.state, arbiter.store, arbiter.telemetry, arbiter.wire.
"""
