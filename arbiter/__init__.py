"""Arbiter: a declarative routing engine and ZeroMQ message broker for plugin ecosystems."""

__version__ = "0.1.0"
