"""The live dashboard: a small ASGI app (starlette, served by uvicorn) that talks to a running
broker through its own services and the event bus, and the page and assets it serves, shipped
in the package (nothing is fetched from the internet at run time).

May import: arbiter.dsl, arbiter.project, arbiter.sdk, arbiter.store, arbiter.wire. (arbiter.dsl for
the chains' compiled plans, which the page draws as graphs.)
"""
