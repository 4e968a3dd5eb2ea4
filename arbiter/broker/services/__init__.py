"""Arbiter's own services on the broker's endpoint, one module each: ``arbiter.route``,
``arbiter.explain``, ``arbiter.status``, and MMI's ``mmi.service``.

Each service is a small class whose docstring is its documentation (the request it reads, the
reply it sends, the command line that calls it; docs/PROTOCOL.md §4 says the same). ``read``
turns the body into a typed request or raises ``BadRequest``; ``execute`` does the work against
the narrow :class:`~arbiter.broker.services.base.ServiceHost`. A new service is one new module
and one line in :mod:`.catalog`; the loop never grows.

May import: arbiter.dsl, arbiter.orchestration, arbiter.project, arbiter.routing, arbiter.store,
arbiter.wire, and of the broker the modules the services act through (chains, decision_cache,
dispatch, messages, plans, settings, workers), never :mod:`arbiter.broker.clients`, which
dispatches to them.
"""
