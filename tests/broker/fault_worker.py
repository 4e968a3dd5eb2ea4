"""A worker process for fault-injection tests (holds no tests): serves SERVICE with the SDK worker,
writes one line per execution to LOG (so a test can count what ran twice), and misbehaves on
request: ``--mode ok|error|hang|die`` (die: exit at once on a request whose parameters say
``"poison": true``, as a worker that a poison message crashes).

    python fault_worker.py ENDPOINT SERVICE LOG [--mode ok] [--delay 0.05] [--credit 4]
                           [--commands a,b,c] [--heartbeat 0.5] [--liveness 4]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from typing import Any

from arbiter.sdk.worker import Worker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("service")
    parser.add_argument("log")
    parser.add_argument("--mode", default="ok", choices=["ok", "error", "hang", "die"])
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--credit", type=int, default=4)
    parser.add_argument("--commands", default="work")
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--liveness", type=int, default=4)
    args = parser.parse_args()
    logging.disable(logging.ERROR)  # injected failures are expected; keep the test output readable

    log_fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    stop = threading.Event()
    worker = Worker(
        args.endpoint,
        args.service,
        credit=args.credit,
        heartbeat_interval=args.heartbeat,
        liveness=args.liveness,
        reconnect_max=0.5,
    )

    def handle(parameters: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
        retries = (envelope.get("metadata") or {}).get("retryCount", 0)
        os.write(log_fd, f"{envelope['messageId']} {retries}\n".encode())  # unbuffered: survives SIGKILL
        if args.mode == "die" and parameters.get("poison"):
            os._exit(3)
        if args.mode == "hang":
            stop.wait(600)
        time.sleep(args.delay)
        if args.mode == "error":
            raise RuntimeError("injected failure")
        return {"served_by": os.getpid(), "id": parameters.get("id")}

    for command in args.commands.split(","):
        worker.command(command)(handle)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    stop.wait()
    worker.stop(timeout=5)


if __name__ == "__main__":
    main()
