"""Ctrl-C (SIGINT) and SIGTERM stop a sweep at the first signal, with one line and exit 130 / 143.

Why a module of its own: Ray Tune installs a SIGINT handler for every search and puts the previous
one back only when a SIGINT arrives, so after the first search of a sweep the handlers stacked and
one or two Ctrl-C went to stale Tune handlers and were lost; `ray.init` replaces the SIGTERM
handler, after which Ray's C++ core aborted the process on SIGTERM (`*** SIGTERM received`, exit
-6). Here the sweep's handlers are installed once (`install`), Tune is told to leave SIGINT alone
(`TUNE_DISABLE_SIGINT_HANDLER`), and every call known to replace handlers (`ray.init`,
`Tuner.fit`) runs inside `keep_handlers`, which puts ours back.

A signal raises KeyboardInterrupt in the main thread, which is what Ray's own waits turn a signal
into as well, so it unwinds the sweep wherever it is: what was finished is saved already (the state
after every unit, atomically), and `--resume` continues. A second signal ends the process at once,
and so does a watchdog if unwinding takes longer than `UNWIND_DEADLINE_S`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Callable, Iterator

#: Seconds between the first signal and a forced exit, should unwinding hang (e.g. a stuck Ray call).
UNWIND_DEADLINE_S = 8.0
HANDLED = (signal.SIGINT, signal.SIGTERM)

_received: list[int] = []
_watchdog: list[threading.Timer] = []
_reported = threading.Event()
_prog = "kdsed.sweep"


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum


def install(prog: str = "kdsed.sweep") -> dict[int, object]:
    """Handle SIGINT and SIGTERM in this process from now on (call from the main thread); the previous handlers."""
    global _prog
    _prog = prog
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    _received.clear()
    _reported.clear()
    previous = {signum: signal.getsignal(signum) for signum in HANDLED}
    for signum in HANDLED:
        signal.signal(signum, _on_signal)
    return previous


@contextlib.contextmanager
def installed(prog: str = "kdsed.sweep") -> Iterator[None]:
    """`install` for the duration of a command (`main` called in-process, e.g. by a test, leaves no trace)."""
    previous = install(prog)
    try:
        yield
    finally:
        if _watchdog:
            _watchdog[0].cancel()
            _watchdog.clear()
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)


def _on_signal(signum: int, frame) -> None:
    if _received:  # a second signal: the user wants out now
        report(signum)
        os._exit(exit_code(_received[0]))
    _received.append(signum)
    watchdog = threading.Timer(UNWIND_DEADLINE_S, _force_exit)
    watchdog.daemon = True
    watchdog.start()
    _watchdog.append(watchdog)
    raise KeyboardInterrupt


def _force_exit() -> None:
    report(_received[0])
    os._exit(exit_code(_received[0]))


def received() -> int:
    """The signal that stopped the sweep (SIGINT when KeyboardInterrupt came from elsewhere)."""
    return _received[0] if _received else signal.SIGINT


def report(signum: int) -> None:
    """Print the one line of an interrupted sweep (once, whoever calls first)."""
    if _reported.is_set():
        return
    _reported.set()
    name = signal.Signals(signum).name
    print(f"{_prog}: stopped by {name}; finished units and stages are saved: run the same command with --resume "
          "to continue", file=sys.stderr, flush=True)


def stop(shutdown: Callable[[], None] | None = None) -> int:
    """After KeyboardInterrupt reached the top: print the line, run `shutdown` (e.g. ray.shutdown); the exit code."""
    signum = received()
    report(signum)
    if shutdown is not None:
        with contextlib.suppress(Exception):
            shutdown()
    return exit_code(signum)


@contextlib.contextmanager
def keep_handlers() -> Iterator[None]:
    """Put back the SIGINT, SIGTERM (and SIGUSR1) handlers that a call inside replaced (Ray, Ray Tune)."""
    signums = [*HANDLED, *([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else [])]
    main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in signums} if main else {}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None and signal.getsignal(signum) is not handler:
                signal.signal(signum, handler)


__all__ = ["HANDLED", "UNWIND_DEADLINE_S", "exit_code", "install", "installed", "keep_handlers", "received", "report",
           "stop"]
