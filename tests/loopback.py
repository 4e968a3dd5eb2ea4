"""Free loopback ports for tests (holds no tests).

Ports come from below the kernel's ephemeral range (``ip_local_port_range``, 32768-60999 on
Linux): a port picked by binding to 0 and closing can be handed out again at once as the source
port of some outgoing connection, and a broker started on it then fails with "address in use".
"""

from __future__ import annotations

import random
import socket

LOW, HIGH = 20_000, 32_000
_given: set[int] = set()  # never hand out a port twice: a broker's three endpoints are picked
# one after the other, and nothing listens on the first until the broker binds it


def free_port() -> int:
    """A loopback TCP port nobody listens on now, outside the ephemeral range, and not handed out
    before by this process."""
    for _ in range(200):
        port = random.randrange(LOW, HIGH)
        if port in _given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {LOW}-{HIGH}")
