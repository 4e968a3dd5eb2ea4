"""The .arb routing language: grammar, parser, AST, compiler, formatter and linter.

Installed as ``arbiter.dsl``; modules here import each other relatively. It knows plugins only
through the narrow view lint declares, so the language stands below everything else.

May import: nothing of Arbiter.
"""
