"""CURVE key files as ZeroMQ writes them: ``NAME.key`` (public) and ``NAME.key_secret`` (both keys).

Reading checks what a broker would otherwise find out only when a peer fails to connect: that the
file exists, holds a key of the right form, and (for a secret file) that its two keys belong
together. Problems are :class:`KeyFileError` with a message and a hint for people, and never
quote a key: a secret must not reach a log or a terminal by way of an error.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

KEY_LENGTH = 40  # a 32-byte CURVE key in Z85
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
MAKE_HINT = "make a key pair with `arbiter keys new NAME`"


class KeyFileError(Exception):
    """A key file that cannot serve: ``message`` says what, ``hint`` what to do."""

    def __init__(self, message: str, hint: str = MAKE_HINT):
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class KeyPair:
    """The keys of one file: ``secret`` is None in a public key file. Its repr omits the secret."""

    public: bytes
    secret: bytes | None = field(default=None, repr=False)


def well_formed(key: bytes) -> bool:
    """Whether ``key`` is 40 Z85 characters that decode to 32 bytes."""
    if len(key) != KEY_LENGTH:
        return False
    try:
        return len(z85.decode(key)) == 32
    except Exception:  # a character outside the alphabet or a group out of range
        return False


def _load(path: Path) -> tuple[bytes, bytes | None]:
    if not path.exists():
        raise KeyFileError("no such file")
    if path.is_dir():
        raise KeyFileError("is a directory, not a key file")
    try:
        return zmq.auth.load_certificate(path)
    except ValueError:
        raise KeyFileError("holds no CURVE public key", f"key files are ZeroMQ certificates; {MAKE_HINT}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot be read ({exc.strerror or exc})", "check the file's permissions") from None


def read_key_file(path: Path) -> KeyPair:
    """The keys in ``path``, checked for form; raises :class:`KeyFileError`."""
    public, secret = _load(path)
    if not well_formed(public):
        raise KeyFileError(f"holds a malformed public key (expected {KEY_LENGTH} Z85 characters)")
    if secret is not None:
        if not well_formed(secret):
            raise KeyFileError(f"holds a malformed secret key (expected {KEY_LENGTH} Z85 characters)")
        if zmq.curve_public(secret) != public:
            raise KeyFileError("its secret key does not belong to its public key", MAKE_HINT)
    return KeyPair(public, secret)


def readable_by_others(path: Path) -> int | None:
    """The file's mode when group or others may read or write it (POSIX only), else None."""
    if os.name != "posix":
        return None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & 0o077 else None
