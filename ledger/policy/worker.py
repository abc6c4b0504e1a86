"""A policy evaluation process (`python -m ledger.policy.worker`), one of `PolicyEngine`'s pool.

Why a process: regopy is ctypes over rego-cpp, so an evaluation runs in C++ without the GIL and
cannot be interrupted. A thread that ran past its budget would keep burning a core until rego-cpp
finished (minutes, for a big enough input); a process can be killed. The engine kills a worker that
overruns its budget and starts a fresh one for the next evaluation.

Protocol on stdin/stdout; every message is a frame: 4-byte big-endian length, then that many bytes.
(1) The engine sends one JSON frame `{"sources": {file: text}, "packages": [...], "budget": s}`;
    the worker compiles the decision of each package and answers `{"ok": true}` or `{"error": msg}`.
(2) Then, per evaluation, two frames: the package name (UTF-8) and the input, the exact RFC 8785
    bytes the engine hashed (sent as they are: no second JSON encoding). The answer is one JSON
    frame, `{"document": {"deny": [...], "warn": [...]} or null}` or `{"error": msg}`.
(3) End of stdin ends the worker.

Invariants: the worker prints nothing else on stdout; after an evaluation error it rebuilds its
interpreter (rego-cpp's state is then unknown). Backstop: a watchdog thread exits the process when
the engine's process is gone, or when an evaluation runs past twice its budget plus 5 s (the engine
kills it at the budget; this only matters if the engine itself is stuck).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import threading
import time
from typing import Any, BinaryIO

from ledger.policy import rego
from ledger.policy.errors import PolicyError

_HEADER = struct.Struct(">I")


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame from a blocking stream; `None` at a clean end of stream."""
    header = stream.read(_HEADER.size)
    if not header:
        return None
    if len(header) != _HEADER.size:
        raise EOFError("truncated frame header")
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("truncated frame")
    return data


def frame(data: bytes) -> bytes:
    """`data` as a frame."""
    return _HEADER.pack(len(data)) + data


class _Decisions:
    def __init__(self, sources: dict[str, str], packages: list[str]) -> None:
        self._sources = sources
        self._packages = packages
        self._build()

    def _build(self) -> None:
        self.interpreter = rego.new_interpreter()
        for name, source in sorted(self._sources.items()):
            rego.add_module(self.interpreter, name, source)
        self.decisions = {p: rego.compile_decision(self.interpreter, p) for p in self._packages}

    def decide(self, package: str, json_text: str) -> dict[str, Any] | None:
        try:
            rego.set_input(self.interpreter, json_text, package=package)
            return rego.query_decision(self.interpreter, self.decisions[package], package=package)
        except PolicyError:
            self._build()
            raise


def _watchdog(parent: int, budget: float, busy: list[float]) -> None:
    while True:
        time.sleep(0.25)
        started = busy[0]
        if os.getppid() != parent or (started and time.monotonic() - started > 2 * budget + 5):
            os._exit(70)


def main() -> int:
    """Serve evaluations until stdin ends."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the real stdout
    setup_frame = read_frame(stdin)
    if setup_frame is None:
        return 0
    setup = json.loads(setup_frame)
    try:
        decisions = _Decisions(setup["sources"], setup["packages"])
        reply: dict[str, Any] = {"ok": True}
    except PolicyError as e:
        reply = {"error": str(e)}
    stdout.write(frame(json.dumps(reply).encode()))
    stdout.flush()
    if "error" in reply:
        return 1
    busy = [0.0]
    threading.Thread(target=_watchdog, args=(os.getppid(), float(setup["budget"]), busy), daemon=True).start()
    while True:
        package_frame = read_frame(stdin)
        input_frame = read_frame(stdin)
        if package_frame is None or input_frame is None:
            return 0
        package = package_frame.decode("utf-8")
        busy[0] = time.monotonic()
        try:
            reply = {"document": decisions.decide(package, input_frame.decode("utf-8"))}
        except PolicyError as e:
            reply = {"error": getattr(e, "reason", str(e))}
        busy[0] = 0.0
        stdout.write(frame(json.dumps(reply).encode()))
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
