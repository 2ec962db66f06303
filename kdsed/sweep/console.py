"""What the sweep prints: kdsed's own lines and one live progress display per pass; other libraries kept quiet.

Each kind of noise is silenced where it arises, not filtered from the text:

- the workers' output (Ray Train's "Reporting training result", its controller's messages, core_worker.cc
  lines such as the PreemptionWatcher notice, "[repeated Nx across cluster]"): not forwarded to the main
  job (`ray.init(log_to_driver=False)`); it stays in the Ray session's log files;
- Ray's own Python loggers in the main job (e.g. the token-authentication notice): errors only
  (`ray.LoggingConfig(log_level="ERROR")`);
- the raylet's "N PYTHON worker processes have been started" (sent to every driver, forwarded or not): a
  local Ray starts with its worker start-up concurrency raised to the processes a pass really starts
  (`Coordinator._local_ray_config`); on a cluster, the cluster's own setting applies;
- MLflow's INFO lines ("Creating initial MLflow database tables"): `MLFLOW_LOGGING_LEVEL=WARNING`;
- Python warnings of libraries that the user can do nothing about (`QUIET_WARNINGS`): ignored.

Errors still show: a unit that fails reaches the coordinator as its exception and is reported in one line. The units' progress reaches the coordinator as `UnitEvent`s (through a Ray
queue, see `kdsed.sweep.workers.ProgressChannel`) and is drawn here: on a terminal a block redrawn in place,
one line per unit with a bar; otherwise one line per epoch. `--verbose` restores Ray's and MLflow's output.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Literal, TextIO

from kdsed.train import EpochLog, format_epoch, time_left_s

#: Python warnings raised by libraries the sweep imports, which the user can do nothing about.
QUIET_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    ("pkg_resources is deprecated", UserWarning),  # dcase_util (through sed_eval)
)

BAR_WIDTH = 20

_verbose = False
_active: PassProgress | None = None


@dataclass(frozen=True)
class UnitEvent:
    """What a unit's lead worker tells the coordinator: an epoch done, a retry, the unit done or failed."""

    unit: str
    kind: Literal["epoch", "retry", "done", "failed"]
    epochs: int
    log: EpochLog | None = None
    attempt: int = 1
    max_failures: int = 0  # of a retry: how many times a failed unit is retried at most
    metrics: dict | None = None  # of `done`: best epoch, clips/s, training time, node, attempt
    error: str = ""  # of `failed`: the exception, in one line


def configure(verbose: bool) -> None:
    """Quiet (default) or verbose console for this process and the Ray workers it starts."""
    global _verbose
    _verbose = verbose
    if verbose:
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read by MLflow when it configures its loggers
    for message, category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def verbose() -> bool:
    """Whether `--verbose` asked for Ray's and MLflow's own output."""
    return _verbose


def say(line: str, stream: TextIO | None = None) -> None:
    """Print one of kdsed's lines (above the live progress block, when one is drawn)."""
    if _active is not None:
        _active.message(line)
        return
    print(line, file=stream or sys.stderr, flush=True)


class PassProgress:
    """The live display of the units trained together: a redrawn block on a TTY, one line per epoch otherwise."""

    def __init__(self, units: dict[str, int], stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.epochs = dict(units)  # unit -> planned epochs
        self.name_width = max(map(len, units), default=0)
        self.last: dict[str, EpochLog] = {}
        self.done: dict[str, str] = {}
        self.started = time.perf_counter()
        self._drawn = 0

    def __enter__(self) -> PassProgress:
        global _active
        _active = self
        self._draw()
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = None
        self._clear()
        if self.tty:
            self._write_lines(self._block())  # the final state stays on screen

    def update(self, event: UnitEvent) -> None:
        """An event of a unit: redraw the block, or print its line."""
        if event.kind == "retry":
            self.message(f"[{event.unit}] RETRY: attempt {event.attempt} (a failed unit is retried up to "
                         f"{event.max_failures} times); training again from scratch, seeded, so with the same result")
            return
        if event.kind in ("done", "failed"):
            return  # the coordinator records the unit and calls `finish`
        self.epochs[event.unit] = event.epochs
        self.last[event.unit] = event.log
        if self.tty:
            self._draw()
        else:
            print(format_epoch(event.unit, event.log, event.epochs), file=self.stream, flush=True)

    def finish(self, unit: str, outcome: str) -> None:
        """A unit ended (`outcome`: a few words, e.g. 'best epoch 4' or 'FAILED')."""
        self.done[unit] = outcome
        self._draw()

    def message(self, line: str) -> None:
        """A line printed above the block (the block is redrawn under it)."""
        self._clear()
        print(line, file=self.stream, flush=True)
        self._draw()

    def left_s(self) -> float | None:
        """Seconds left at most for the slowest running unit (None before every unit reported an epoch)."""
        running = [u for u in self.epochs if u not in self.done]
        if any(u not in self.last for u in running):
            return None
        return max((time_left_s(self.last[u], self.epochs[u]) for u in running), default=0.0)

    def row(self, unit: str) -> str:
        """One unit's line of the block: bar, epoch, losses, clips/s, time left."""
        total, log = self.epochs[unit], self.last.get(unit)
        done = log.epoch if log else 0
        filled = BAR_WIDTH if unit in self.done else round(BAR_WIDTH * done / total)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        name = unit.ljust(self.name_width)
        if log is None:
            state = self.done.get(unit, "starting")
            return f"  {name} [{bar}] {state}"
        tail = self.done.get(unit) or f"{time_left_s(log, total):.0f} s left at most"
        return (f"  {name} [{bar}] epoch {log.epoch}/{total}  train {log.train_loss:.4f}  val {log.val_loss:.4f}  "
                f"{log.clips_per_s:.0f} clips/s  {tail}")

    def _block(self) -> list[str]:
        left = self.left_s()
        head = (f"  {len(self.done)}/{len(self.epochs)} units done, {time.perf_counter() - self.started:.0f} s"
                + (f", at most {left:.0f} s left" if left is not None and len(self.done) < len(self.epochs) else ""))
        return [head, *(self.row(u) for u in self.epochs)]

    def _draw(self) -> None:
        if not self.tty:
            return
        self._clear()
        self._drawn = self._write_lines(self._block())

    def _write_lines(self, lines: list[str]) -> int:
        self.stream.write("".join(line + "\n" for line in lines))
        self.stream.flush()
        return len(lines)

    def _clear(self) -> None:
        """Erase the block drawn last (cursor up one line and clear it, for each of its lines)."""
        if self.tty and self._drawn:
            self.stream.write("\x1b[1F\x1b[2K" * self._drawn)
            self.stream.flush()
        self._drawn = 0
