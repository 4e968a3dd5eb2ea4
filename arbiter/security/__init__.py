"""Who may talk to the broker and what each peer may do: CURVE key files, the identities of
``configs/security.yaml`` and their permission rules for serving, calling, publishing and
subscribing. Loading reports problems as diagnostics; the broker applies the result.

May import: arbiter.dsl, arbiter.project, arbiter.wire.
"""
