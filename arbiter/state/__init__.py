"""Shared state's replicated data types (CRDTs) as plain data: values that several processes
change at once and that still agree once each has seen the others' states, in any order and
however often. docs/STATE.md describes the types and their merge rules.

May import: nothing of Arbiter.
"""
