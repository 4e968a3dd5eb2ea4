"""The forward-chaining rules engine: shared semantics, durable-rules and the pure-Python
evaluator behind one interface (:mod:`.engines`).

May import: arbiter.dsl, and of routing only :mod:`arbiter.routing.globs` (the one path-glob
meaning ``file matches`` conditions share with classify and match).
"""
