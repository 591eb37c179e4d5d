"""Detectors in a second process, so that a two-core machine runs the pipeline on both cores.

The pipeline is one Python thread: decoding, the decision stage and every detector take turns under the GIL.
The group detectors (graph search, coordination sketches) cost as much as all the rest together and never
read the decision stage, so they can run beside it: `DetectorProcess` starts a child that builds them,
receives each batch's accepted lines, decodes them itself (validation is deterministic, so it sees the very
events the parent saw) and answers with its detectors' signals while the parent runs its own. Snapshots
and restores pass through to the child. A child that fails takes the pipeline down with its traceback: a
detector silently missing would be worse than a restart.

The child ignores SIGINT and SIGTERM: Ctrl-C in a terminal (or a stop signal to the process group) reaches
every process of the group at once, and the worker must still finish the batch in hand and snapshot the
child's detectors before it stops them (`close`). A child whose parent is gone sees its socket close and
exits.

The child is a fresh interpreter (`python -m streams.parallel`) joined by a socket pair, not a
multiprocessing fork or spawn: the Faust worker has an event loop and threads that a fork would copy in an
undefined state, and spawn re-imports the parent's main script, which breaks any script that builds a
pipeline at top level.
"""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
import traceback
import weakref
from multiprocessing.connection import Connection
from typing import Any

from detectors.base import Signal

SOCKET_BUFFER = 4 << 20  # bytes: a batch of 2,048 lines is some 0.5 MB


class DetectorProcess:
    """The named detectors (streams.assembly names), built and run in a child process."""

    def __init__(self, names: list[str], configs: dict[str, dict] | None = None,
                 false_flag_budget: float | None = None, encoder_options: dict | None = None):
        self.names = list(names)
        mine, theirs = socket.socketpair()
        for end in (mine, theirs):  # a whole batch fits in flight where the system allows (net.core.wmem_max)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        # The detectors' raw settings travel as JSON (the child validates them as the parent did).
        settings = json.dumps({"configs": configs or {}, "false_flag_budget": false_flag_budget,
                               "encoder": encoder_options}, default=list)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "streams.parallel", str(theirs.fileno()), ",".join(self.names), settings],
            pass_fds=(theirs.fileno(),),
            # A session of its own: a stop signal to the worker's process group (Ctrl-C) does not reach it,
            # not even while it starts up, before it ignores such signals itself.
            start_new_session=True)
        theirs.close()
        self._conn = Connection(mine.detach())
        self._in_flight = 0  # batches submitted and not collected: answered in order
        self._finalizer = weakref.finalize(self, _stop, self._conn, self._process)

    def submit(self, lines: list[bytes | str], now: float, final: bool = False) -> None:
        self._send(("observe", lines, now, final))
        self._in_flight += 1

    def collect(self) -> list[tuple[str, list[Signal], float]]:
        """The answer to the oldest batch submitted."""
        if not self._in_flight:
            raise RuntimeError("collect without a batch submitted")
        self._in_flight -= 1
        return self._receive()

    def snapshot(self) -> dict[str, bytes]:
        self._require_collected("a snapshot")
        self._send(("snapshot",))
        return self._receive()

    def restore(self, states: dict[str, bytes]) -> None:
        self._require_collected("a restore")
        self._send(("restore", states))
        self._receive()

    def _require_collected(self, before: str) -> None:
        if self._in_flight:
            raise RuntimeError(f"{self._in_flight} batches not collected before {before}")

    def close(self) -> None:
        self._finalizer()

    def _send(self, message: tuple) -> None:
        if not self._finalizer.alive:
            raise RuntimeError("the detector process was closed")
        try:
            self._conn.send(message)
        except (BrokenPipeError, ConnectionResetError, OSError) as error:
            raise RuntimeError(f"detector process {self.names} is gone (exit code "
                               f"{self._process.poll()})") from error

    def _receive(self) -> Any:
        try:
            status, value = self._conn.recv()
        except (EOFError, ConnectionResetError, OSError) as error:
            raise RuntimeError(f"detector process {self.names} died (exit code {_wait(self._process)})"
                               ) from error
        if status == "error":
            raise RuntimeError(f"detector process {self.names} failed:\n{value}")
        return value


def _wait(process: subprocess.Popen, seconds: float = 5.0) -> int | None:
    try:
        return process.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


def _stop(conn: Connection, process: subprocess.Popen) -> None:
    try:
        conn.send(("close",))
    except (OSError, ValueError):
        pass
    if _wait(process) is None:
        process.kill()
        _wait(process)
    conn.close()


def _serve(conn: Connection, names: list[str], settings: dict) -> None:
    """The child's loop: one request, one answer, until told to close or the parent goes away."""
    from detectors.events import decode_event
    from streams.assembly import DEFAULT_FALSE_FLAG_BUDGET, build_detectors
    from streams.gc_tuning import settle

    try:
        detectors = build_detectors(",".join(names), settings.get("configs"),
                                    settings.get("false_flag_budget") or DEFAULT_FALSE_FLAG_BUDGET,
                                    settings.get("encoder"))
    except Exception:  # noqa: BLE001 - reported to the parent at its first request
        detectors, failure = [], traceback.format_exc()
    else:
        failure = None
    settle()
    requests = _read_ahead(conn)
    while True:
        request = requests.get()
        if request is None:
            return  # the parent is gone
        op = request[0]
        if op == "close":
            return
        try:
            if failure is not None:
                raise RuntimeError(f"building detectors failed:\n{failure}")
            if op == "observe":
                _, lines, now, final = request
                events = [decode_event(line) for line in lines]  # accepted by the parent: all valid
                answer = []
                for detector in detectors:
                    started = time.perf_counter()
                    signals = detector.finish(now) if final else detector.observe(events, now)
                    answer.append((detector.name, signals, time.perf_counter() - started))
            elif op == "snapshot":
                answer = {detector.name: detector.snapshot() for detector in detectors}
            elif op == "restore":
                for detector in detectors:
                    if detector.name in request[1]:
                        detector.restore(request[1][detector.name])
                answer = None
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception:  # noqa: BLE001 - the parent raises it with this traceback
            reply = ("error", traceback.format_exc())
        else:
            reply = ("ok", answer)
        try:
            conn.send(reply)
        except (BrokenPipeError, ConnectionResetError):  # the parent is gone (killed): nobody to answer
            return


def _read_ahead(conn: Connection) -> "queue.SimpleQueue[tuple | None]":
    """Requests as they arrive, read on a thread of their own: the parent may send the next batch while
    this process still works on one (and then waits for that answer), and a parent blocked writing a
    request larger than the socket buffer to a child blocked writing its answer would wait forever."""
    requests: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()

    def read() -> None:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                requests.put(None)
                return
            requests.put(request)
            if request[0] == "close":
                return

    threading.Thread(target=read, name="requests", daemon=True).start()
    return requests


def ignore_stop_signals() -> None:
    """SIGINT and SIGTERM are the parent's to act on (see the module's note)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def log_to_stderr() -> None:
    """WARNINGs, and which text encoder runs and why, into the worker's log (the child shares its stderr)."""
    import logging

    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s (detector process): %(message)s")
    logging.getLogger("models.text_encoder").setLevel(logging.INFO)


if __name__ == "__main__":
    ignore_stop_signals()
    # The request reader thread takes the GIL from the detectors within half a millisecond instead of the
    # default five: at five, a parent sending the next batch waited on every chunk the reader took, and the
    # detectors on both sides ran more one after the other than side by side (replay 12,200 -> 16,400
    # events/s on two cores, benchmarks/replay_throughput.py's stream).
    sys.setswitchinterval(0.0005)
    log_to_stderr()
    _serve(Connection(int(sys.argv[1])), sys.argv[2].split(","), json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
