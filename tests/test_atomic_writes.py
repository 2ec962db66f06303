"""A writer killed partway: the target is the old file intact or the complete new one, never a torn one.

Each writer (Parquet pseudo-labels, a checkpoint, a class bundle) runs in a subprocess over an existing
good target, large enough that writing takes a while; it is SIGKILLed as soon as its temporary sibling
appears. The target must read back exactly as before, and the next successful write must replace it
and remove the leftover of the killed writer. `kdsed.atomic` itself is tested at the end.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from support.atomic_writer import write_version
from kdsed.atomic import _HOST, replace_dir_atomic, write_atomic, write_bytes_atomic
from kdsed.bundle import read_class_bundle
from kdsed.pseudolabels import read_pseudo_labels
from kdsed.train import load_checkpoint

#: kind -> (the target the writer is given, the file or folder that appears under a temporary name)
TARGETS = {"pseudo": ("pass-1.parquet", "pass-1.parquet"), "checkpoint": ("unit", "model.pt"),
           "bundle": ("Dog", "Dog")}


def _writer(kind: str, target: Path, seed: int) -> subprocess.Popen:
    """`write_version` in a subprocess (to be killed)."""
    return subprocess.Popen([sys.executable, str(Path(__file__).parent / "support" / "atomic_writer.py"), kind, str(target),
                             str(seed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _temporaries(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.tmp-*"))


def _digest(path: Path) -> dict[str, str]:
    """sha256 of a file, or of every file in a folder (by relative path)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _read_back(kind: str, target: Path) -> object:
    """The target read by its real reader (which verifies it), reduced to something comparable."""
    if kind == "pseudo":
        labels = read_pseudo_labels(target)
        return labels.meta["seed"], float(labels.probs.sum(dtype=np.float64))
    if kind == "checkpoint":
        _, weights, _ = load_checkpoint(target / "model.pt")
        return float(weights["big"].double().sum())
    bundle = read_class_bundle(target)  # checks the weights' sha256 against class.json
    return bundle.spec.provenance["seed"], bundle.spec.sha256


@pytest.mark.parametrize("kind", list(TARGETS))
def test_killed_writer_leaves_the_old_target_and_the_next_write_cleans_up(tmp_path: Path, kind: str) -> None:
    target_name, written_name = TARGETS[kind]
    target = tmp_path / target_name
    written = target if kind != "checkpoint" else target / written_name
    write_version(kind, target, seed=1)
    old_digest, old_value = _digest(written), _read_back(kind, target)

    proc = _writer(kind, target, seed=2)
    deadline = time.monotonic() + 120
    while not _temporaries(written.parent, written_name):
        if proc.poll() is not None:
            pytest.fail(f"the writer ended ({proc.returncode}) before its temporary file was seen: "
                        f"{proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()

    assert _temporaries(written.parent, written_name), "killed after the write, not during it"
    assert _digest(written) == old_digest  # the old target, byte for byte
    assert _read_back(kind, target) == old_value

    write_version(kind, target, seed=3)  # a later write: complete, and it removes the killed writer's leftover
    assert _read_back(kind, target) not in (old_value, None)
    assert _temporaries(written.parent, written_name) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [target_name]


# ---- kdsed.atomic directly ---------------------------------------------------------------------------------

def test_failed_fill_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = write_bytes_atomic(tmp_path / "a.bin", b"old")

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_folder_swap_keeps_the_old_folder_on_failure_and_replaces_it_whole(tmp_path: Path) -> None:
    def fill(version: str):
        return lambda tmp: [(tmp / name).write_text(version) for name in ("x", "y")]

    target = replace_dir_atomic(tmp_path / "d", fill("1"))
    (target / "stale").write_text("only in version 1")

    def fail(tmp: Path) -> None:
        fill("2")(tmp)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_dir_atomic(target, fail)
    assert sorted(p.name for p in target.iterdir()) == ["stale", "x", "y"] and (target / "x").read_text() == "1"
    replace_dir_atomic(target, fill("2"))
    assert sorted(p.name for p in target.iterdir()) == ["x", "y"] and (target / "y").read_text() == "2"
    replace_dir_atomic(target, fill("3"), keep_existing=True)  # a cache entry: the first one stays
    assert (target / "x").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_folder_lost_between_two_renames_is_put_back(tmp_path: Path) -> None:
    """Where folders cannot be exchanged in one step: a writer killed between its two renames left no target."""
    target = replace_dir_atomic(tmp_path / "d", lambda tmp: (tmp / "x").write_text("old"))
    pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                             text=True).stdout)  # a process that has ended
    os.replace(target, tmp_path / f".d.old-{_HOST}-{pid}-0000")
    (tmp_path / f".d.tmp-{_HOST}-{pid}-0000").mkdir()  # its new folder, never renamed

    def fail(tmp: Path) -> None:
        raise OSError("no space left")

    with pytest.raises(OSError, match="no space left"):
        replace_dir_atomic(target, fail)
    assert (target / "x").read_text() == "old"  # put back before anything else happened
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_a_live_writers_temporary_is_left_alone(tmp_path: Path) -> None:
    other = tmp_path / f".a.bin.tmp-{_HOST}-1-abcd"  # pid 1 is alive
    other.write_bytes(b"another writer at work")
    write_bytes_atomic(tmp_path / "a.bin", b"mine")
    assert other.read_bytes() == b"another writer at work"
