"""CURVE keys for a client or a worker of a broker that has security on (docs/SECURITY.md).

A peer needs its own key pair (``arbiter keys new NAME`` writes ``NAME.key`` and
``NAME.key_secret``, the files pyzmq's ``zmq.auth`` reads and writes) and the broker's public key.
Give them in code (:meth:`CurveKeys.from_files`) or in the environment, which every command and
SDK object reads when given none: ``ARBITER_CURVE_KEY`` (this peer's ``.key_secret`` file) and
``ARBITER_BROKER_KEY`` (the broker's ``.key`` file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth

KEY_ENV = "ARBITER_CURVE_KEY"
BROKER_KEY_ENV = "ARBITER_BROKER_KEY"
HELPER_ENV = "ARBITER_HELPER_CURVE"  # a broker's own helper processes: "public secret server", Z85


def connect(sock: zmq.Socket, endpoint: str, curve: CurveKeys | None) -> None:
    """Connect ``sock`` to the broker, as a CURVE client when there are keys."""
    if curve is not None:
        curve.apply(sock)
    sock.connect(endpoint)


@dataclass(frozen=True)
class CurveKeys:
    """This peer's key pair and the broker's public key, Z85-encoded. The secret is never shown."""

    public: bytes
    secret: bytes = field(repr=False)
    server: bytes

    @classmethod
    def from_files(cls, secret_file: str | os.PathLike, broker_key_file: str | os.PathLike) -> CurveKeys:
        public, secret = zmq.auth.load_certificate(Path(secret_file))
        if secret is None:
            raise ValueError(f"{secret_file} holds no secret key: give the .key_secret file of this peer")
        server, _ = zmq.auth.load_certificate(Path(broker_key_file))
        return cls(public, secret, server)

    @classmethod
    def from_env(cls) -> CurveKeys | None:
        """The keys the environment names, or None when it names none."""
        helper = os.environ.get(HELPER_ENV)
        if helper:
            public, secret, server = (part.encode("ascii") for part in helper.split())
            return cls(public, secret, server)
        secret_file, broker_file = os.environ.get(KEY_ENV), os.environ.get(BROKER_KEY_ENV)
        if not secret_file and not broker_file:
            return None
        if not (secret_file and broker_file):
            raise ValueError(f"set both {KEY_ENV} (this peer's .key_secret) and {BROKER_KEY_ENV} (the broker's .key)")
        return cls.from_files(secret_file, broker_file)

    def helper_env(self) -> dict[str, str]:
        """The environment that hands these keys to a helper process the broker starts."""
        return {HELPER_ENV: " ".join(key.decode("ascii") for key in (self.public, self.secret, self.server))}

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the broker (before it connects)."""
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server
