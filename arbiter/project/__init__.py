"""A project as Arbiter reads it: plugin directories, ``configs/*.yaml`` and the compiled rules,
turned into one immutable :class:`~arbiter.project.snapshot.Snapshot`.

Everything downstream reads a snapshot, never the files; a reload builds a new one.

May import: arbiter.dsl.
"""
