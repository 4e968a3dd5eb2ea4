"""The .arb routing language: grammar, parser, AST, compiler, formatter and linter.

Installed as ``arbiter.dsl``; modules here import each other relatively.
"""
