"""The forward-chaining rules engine: shared semantics, durable-rules and the pure-Python
evaluator behind one interface (:mod:`.engines`).

May import: arbiter.dsl.
"""
