"""The .arb routing language: grammar, parser, AST, compiler, formatter and linter.

Installed as ``arbiter.dsl``; modules here import each other relatively. It knows plugins only
through the narrow view it declares (:mod:`.plugin_view`), which the project's plugins satisfy
structurally, so the language stands below everything else. :mod:`.program` is the entry point
(load and lint a rules folder); the import graph inside runs one way.

May import: nothing of Arbiter.
"""
