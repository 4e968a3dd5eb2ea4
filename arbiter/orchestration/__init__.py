"""Chains and collaboration plans, run: the scheduling of their steps (sequential, parallel,
conditional, saga with compensations), what a step's arguments and conditions read, and the
states a run and its steps go through. No sockets and no database here: the broker sends the
steps and keeps the states (:mod:`arbiter.broker.chains`), so a run can be followed, tested and
resumed as plain data.

May import: arbiter.dsl, arbiter.project, arbiter.routing.
"""
