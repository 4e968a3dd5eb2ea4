"""Security on the bus: CURVE on the broker's sockets, ZAP for who may connect, and the
permissions of configs/security.yaml checked on every message (docs/SECURITY.md).

A peer proves its key in the CURVE handshake; the ZAP handler (pyzmq's authenticator, on a thread
of its own) lets in only the keys the current configuration names, and tags each connection with
its identity's name as the ZAP User-Id, which every message read on that connection carries. The
loop reads it with the message and asks the rules: a READY for a service the identity may not
serve is answered DISCONNECT (no request ever reaches it), a request to a service it may not call
gets ``FORBIDDEN``. The rules are looked up on each message, so a reload that revokes an identity
takes effect on its next message; the key list the ZAP handler reads is swapped with it, so a
revoked key cannot connect again either. Refusals are counted (``arbiter status`` ``security``)
and published on ``system/security``; no key material is ever logged or shown.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Callable
from urllib.parse import urlsplit

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from arbiter.broker import messages
from arbiter.sdk.curve import CurveKeys
from arbiter.security.config import Identity, Security
from arbiter.security.permissions import Rule
from arbiter.wire.mdp import MDPC01, MDPW01, READY

log = logging.getLogger("arbiter.broker")

ZAP_DOMAIN = b"arbiter"


class InsecureBind(RuntimeError):
    """A non-loopback address without CURVE, and no ``--insecure``."""


def loopback_only(*endpoints: str) -> bool:
    """Whether every endpoint stays on this machine (ipc://, inproc://, or a loopback tcp address)."""
    for endpoint in endpoints:
        if not endpoint.startswith("tcp://"):
            continue
        host = urlsplit(endpoint).hostname or ""
        if host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:  # a wildcard (*) or an interface name: not only this machine
            return False
    return True


def check_bind(security: Security, insecure: bool, *endpoints: str) -> None:
    """Refuse to serve beyond this machine in the clear unless told to (and then say so)."""
    if security.enabled or loopback_only(*endpoints):
        return
    if not insecure:
        raise InsecureBind(
            f"{', '.join(endpoints)} is reachable from other machines and configs/security.yaml turns no "
            "CURVE on: anyone who reaches the port could serve or read any request. Turn security on "
            "(docs/SECURITY.md), bind 127.0.0.1, or pass --insecure to accept it"
        )
    log.warning("serving %s without CURVE (--insecure): traffic is in the clear and unauthenticated", endpoints)


class _KnownKeys:
    """What the ZAP handler asks about a CURVE client: known, and under which name. It reads the
    guard's current configuration, so a reload reaches it at once."""

    def __init__(self, guard: Guard):
        self.guard = guard

    def callback(self, domain: str, key: bytes) -> bool:
        known = self.guard.security.identity_of(key) is not None
        if not known:
            self.guard.refused_handshakes += 1  # counted on the ZAP thread; read by the loop
            event = {"event": "refused-handshake", "publicKey": key.decode("ascii", "replace")}
            self.guard.post(lambda: self.guard.publish("system/security", event))  # published on the loop
        return known


HELPERS = "arbiter-helpers"  # the identity of the broker's own helper processes


def _with_helpers(security: Security, helpers: CurveKeys) -> Security:
    """The configured identities, and one for the broker's own helper processes (deciders, state
    keepers): a key pair drawn when the broker starts, allowed to serve only internal services."""
    identity = Identity(HELPERS, helpers.public, serve=Rule(allow=("arbiter.**",)))
    return replace(
        security,
        identities=MappingProxyType({**security.identities, HELPERS: identity}),
        by_key=MappingProxyType({**security.by_key, helpers.public: identity}),
    )


class Guard:
    """The broker's security: started with its sockets, consulted on every message."""

    def __init__(
        self,
        security: Security,
        publish: Callable[[str, dict[str, Any]], None],
        post: Callable[[Callable[[], None]], None] = lambda action: action(),
    ):
        """``publish`` runs on the loop thread; ``post`` hands it there from the ZAP thread."""
        public, secret = zmq.curve_keypair()
        self.helper_keys = CurveKeys(public, secret, security.public_key or b"")
        self.security = _with_helpers(security, self.helper_keys)
        self.publish = publish
        self.post = post
        self.counters: Counter[str] = Counter()
        self.refused_handshakes = 0
        self.authenticator: ThreadAuthenticator | None = None

    # -- sockets ---------------------------------------------------------------------------

    def start(self, ctx: zmq.Context) -> None:
        """The ZAP handler, before any socket binds."""
        if not self.security.enabled:
            return
        self.authenticator = ThreadAuthenticator(ctx, log=logging.getLogger("arbiter.broker.zap"))
        self.authenticator.start()
        self.authenticator.configure_curve_callback(domain=ZAP_DOMAIN.decode(), credentials_provider=_KnownKeys(self))
        self.authenticator.curve_user_id = self._user_id  # type: ignore[method-assign]

    def _user_id(self, client_public_key: bytes) -> str:
        identity = self.security.identity_of(z85.encode(client_public_key))
        return identity.name if identity is not None else ""

    def secure(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server behind the ZAP handler (call before bind)."""
        if not self.security.enabled:
            return
        sock.curve_server = True
        sock.curve_secretkey = self.security.secret_key
        sock.curve_publickey = self.security.public_key
        sock.zap_domain = ZAP_DOMAIN

    def adopt(self, security: Security) -> bool:
        """A reload: the new rules from the next message on; True when the peers or their rules
        changed. Security cannot be turned on or off without a restart (the sockets' CURVE
        settings are made at bind)."""
        if security.enabled == self.security.enabled:
            before = self.security.to_json()
            self.security = _with_helpers(security, self.helper_keys)
            return self.security.to_json() != before
        else:
            turned = "on" if security.enabled else "off"
            log.error("configs/security.yaml turns security %s: restart the broker for it", turned)
            return False

    def stop(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None

    # -- messages --------------------------------------------------------------------------

    def admits(self, frames: list[bytes], user: str) -> Refusal | None:
        """None when the message may go on; else what to answer."""
        if len(frames) < 4 or frames[1]:
            return None  # not MDP: the loop's own checks refuse it
        if frames[2] == MDPC01:
            service = frames[3].decode("utf-8", "replace")
            if not self.security.may_call(user, service):
                return self._refused("forbidden-call", user, service, frames)
        elif frames[2] == MDPW01 and frames[3] == READY and len(frames) >= 5:
            service = frames[4].decode("utf-8", "replace")
            if not self.security.may_serve(user, service):
                return self._refused("forbidden-serve", user, service, frames)
        return None

    def may_subscribe(self, user: str, subscription: str, subscribing: bool) -> bool:
        """A subscription is applied only when its identity may read every topic it delivers;
        a refused one is counted and announced (its unsubscription, later, is let go quietly)."""
        if self.security.may_subscribe(user, subscription):
            return True
        if subscribing:
            self._refused("forbidden-subscribe", user, subscription, [])
        return False

    def may_publish(self, user: str, topic: str) -> bool:
        """A publisher's event goes on only where its identity may publish (else it is dropped,
        counted in ``events.forbiddenPublications``)."""
        return self.security.may_publish(user, topic)

    def _refused(self, what: str, user: str, service: str, frames: list[bytes]) -> Refusal:
        self.counters[what] += 1
        self.publish("system/security", {"event": what, "identity": user or None, "service": service})
        log.warning("%s: identity %r, service %r", what, user or None, service)
        return Refusal(what, user, service, frames)

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.security.enabled,
            "identities": len(self.security.identities),
            "refusedHandshakes": self.refused_handshakes,
            **{key: value for key, value in sorted(self.counters.items())},
        }


class Refusal:
    """A message the rules refuse, and how the broker answers it."""

    def __init__(self, what: str, user: str, service: str, frames: list[bytes]):
        self.what, self.user, self.service, self.frames = what, user, service, frames

    def answer(self) -> bytes:
        message = f"identity {self.user or '(none)'} may not call {self.service}"
        return messages.error_body(self.frames[4:], "FORBIDDEN", message)
