"""A worker process for the chain fault tests (holds no tests): serves one plugin's SERVICE with the
Python SDK worker and writes down what it did, so a test can count each step's executions from
the worker's side, also across a SIGKILL.

    python chain_worker.py ENDPOINT SERVICE LOG --commands a,b,c [--fail a,b] [--hang c]
                           [--sleep a=1.5,b=0.2] [--delay 0.0] [--credit 4] [--trace PATH]
                           [--heartbeat 0.5] [--liveness 4]

LOG gets one line per *completed* execution, written with one unbuffered ``write`` after the
handler ran and before the reply leaves: ``<messageId> <command> <ok|error> <pid>``. A handler
that was killed, or still hangs, leaves no line. TRACE (optional) gets ``recv <messageId>`` for
every delivery the worker reads, duplicates included (the SDK answers those from its cache
without running the handler), and ``begin <messageId> <command>`` when a handler starts: what a
test needs to know which worker holds a step and that a step was sent again.

``--fail``: those commands answer with an error (``STEP_FAILED``, which the broker may retry);
``--hang``: those commands never answer; ``--sleep CMD=S``: those commands take S seconds
(``--delay`` is the time every other command takes). SIGTERM stops the worker the SDK's way:
what it runs is finished and answered, then it says DISCONNECT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from typing import Any

from arbiter.sdk.worker import CommandError, Worker
from arbiter.wire import envelope as env


class TracingWorker(Worker):
    """The SDK worker, telling ``trace`` about every request it reads (before its duplicate cache
    decides whether the handler runs)."""

    def __init__(self, *args: Any, trace_fd: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trace_fd = trace_fd

    def _on_request(self, to: Any, body: list[bytes], pool: Any) -> None:
        if self.trace_fd is not None and len(body) == 1:
            envelope = env.as_envelope(body[0])
            if envelope is not None:
                os.write(self.trace_fd, f"recv {envelope['messageId']}\n".encode())
        super()._on_request(to, body, pool)


def _names(text: str) -> set[str]:
    return {name for name in text.split(",") if name}


def _sleeps(text: str) -> dict[str, float]:
    out = {}
    for item in _names(text):
        name, _, seconds = item.partition("=")
        out[name] = float(seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("service")
    parser.add_argument("log")
    parser.add_argument("--commands", required=True)
    parser.add_argument("--fail", default="")
    parser.add_argument("--hang", default="")
    parser.add_argument("--sleep", default="")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--credit", type=int, default=4)
    parser.add_argument("--trace", default="")
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--liveness", type=int, default=4)
    args = parser.parse_args()
    logging.disable(logging.ERROR)  # injected failures are expected; keep the test output readable

    fail, hang, sleeps = _names(args.fail), _names(args.hang), _sleeps(args.sleep)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    log_fd = os.open(args.log, flags, 0o644)
    trace_fd = os.open(args.trace, flags, 0o644) if args.trace else None
    pid = os.getpid()
    stop, never = threading.Event(), threading.Event()
    worker = TracingWorker(
        args.endpoint,
        args.service,
        credit=args.credit,
        heartbeat_interval=args.heartbeat,
        liveness=args.liveness,
        reconnect_max=0.5,
        trace_fd=trace_fd,
    )

    def serve(command: str):
        def handle(parameters: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
            key = envelope["messageId"]
            if trace_fd is not None:
                os.write(trace_fd, f"begin {key} {command}\n".encode())
            if command in hang:
                never.wait()
            time.sleep(sleeps.get(command, args.delay))
            outcome = "error" if command in fail else "ok"
            os.write(log_fd, f"{key} {command} {outcome} {pid}\n".encode())  # one write: survives SIGKILL
            if outcome == "error":
                raise CommandError("STEP_FAILED", f"{command} failed, as it was told to")
            return {"command": command, "id": f"{command}-{key}", "value": parameters.get("value"), "worker": pid}

        return handle

    for command in _names(args.commands):
        worker.command(command)(serve(command))
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    stop.wait()
    worker.stop(timeout=15)


if __name__ == "__main__":
    main()
