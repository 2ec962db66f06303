"""kdsed.sweep.interrupts without a sweep: handlers put back after calls that replace them, one line, exit codes.
(The real thing, SIGINT and SIGTERM to running sweeps, is in tests/sweep/test_interrupts.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from kdsed.sweep import interrupts


def test_handlers_replaced_inside_keep_handlers_are_put_back() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        def ours(signum, frame):  # pragma: no cover - never called
            raise AssertionError

        signal.signal(signal.SIGINT, ours)
        for _ in range(3):  # as Ray Tune does once per search, without putting the previous one back
            with interrupts.keep_handlers():
                signal.signal(signal.SIGINT, lambda s, f: None)
                signal.signal(signal.SIGTERM, lambda s, f: None)
                signal.signal(signal.SIGUSR1, lambda s, f: None)
        assert signal.getsignal(signal.SIGINT) is ours
        assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]
        assert signal.getsignal(signal.SIGUSR1) is before[signal.SIGUSR1]
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading, time
    from kdsed.sweep import interrupts
    interrupts.install()
    assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
    signum = getattr(signal, sys.argv[1])
    threading.Timer(0.5, os.kill, (os.getpid(), signum)).start()
    try:
        time.sleep(30)
    except KeyboardInterrupt:
        sys.exit(interrupts.stop())
    sys.exit(0)
""")


def test_a_signal_becomes_one_line_and_the_shell_exit_code() -> None:
    for name, code in (("SIGINT", 130), ("SIGTERM", 143)):
        proc = subprocess.run([sys.executable, "-c", SCRIPT, name], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert proc.returncode == code, proc.stderr
        assert proc.stderr == (f"kdsed.sweep: stopped by {name}; finished units and stages are saved: run the same "
                               "command with --resume to continue\n")


HANGS = textwrap.dedent("""
    import os, signal, sys, threading, time
    from kdsed.sweep import interrupts
    interrupts.UNWIND_DEADLINE_S = 1.0
    interrupts.install()
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    while True:  # a call that swallows KeyboardInterrupt and carries on
        try:
            time.sleep(30)
        except KeyboardInterrupt:
            pass
""")


def test_a_sweep_that_does_not_unwind_is_ended_by_the_watchdog() -> None:
    proc = subprocess.run([sys.executable, "-c", HANGS], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 130 and proc.stderr.startswith("kdsed.sweep: stopped by SIGINT;"), proc.stderr
    assert proc.stderr.count("\n") == 1
