"""Faults a sweep survives, each injected for real, and the determinism that makes them harmless.

One module fixture starts two `smoke` sweeps at once with the same config (tests/sweep_runs.py::sweep_config),
hence the same MLflow store (SQLite), the same storage root and the same data workdir; while the first
one trains pass 1, the test SIGKILLs that unit's Ray Train worker process (its pid is in the unit's
`attempts/` records). Both must finish: the killed one after Ray Train's retry, with the outcome of the
undisturbed one, which is in turn the outcome of the session's `finished_sweep` (stopped three times,
killed mid-pass-2 and resumed, on a synthetic set generated in the test process): same seed and config, same
per-class selections and metrics.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from support.sweep_runs import read_states, start_sweep_cli, store_uri, sweep_config, sweep_folder, wait_sweep

from kdsed import schema
from kdsed.constants import CLASSES
from kdsed.registry import registered_model_name

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the worker through /proc")]

KILLED_UNIT = "pass-1/deep"  # every later stage depends on it: a retry that changed anything would show
KILLED_FOLDER = schema.unit_folder_name(KILLED_UNIT)
STAGES = ["baseline", "topline", "tagging", "baseline-2stage", "pass-1", "pass-2"]


@dataclass
class ConcurrentSweeps:
    """Two sweeps run at once against one store: `killed` lost a training worker, `undisturbed` did not."""

    root: Path  # sweep.yaml, storage/, mlflow.db, work/ (shared); killed/ and undisturbed/ (each one's cwd and output)
    ids: dict[str, str]  # "killed" / "undisturbed" -> sweep id
    killed_pid: int
    wall_s: float

    def cwd(self, name: str) -> Path:
        return self.root / name

    def stderr(self, name: str) -> str:
        return (self.cwd(name) / "stderr.txt").read_text(errors="replace")

    def folder(self, name: str) -> Path:
        return sweep_folder(self.root, self.ids[name])

    def state(self, name: str) -> dict:
        return read_states(self.root)[self.ids[name]]


def sweep_id_in(cwd: Path) -> str | None:
    """The id a running sweep logged first (`sweep <id>: N passes ...`)."""
    found = re.search(r"\] sweep (\S+): \d+ passes", (cwd / "stderr.txt").read_text(errors="replace"))
    return found.group(1) if found else None


def kill_training_worker(proc, cwd: Path, root: Path, unit: str, timeout_s: float = 600) -> int:
    """SIGKILL the Ray Train worker of `unit` as soon as it recorded its start in the unit's `attempts/` folder.

    From then until it stores the unit, the worker trains; a retry trains from the start, so any moment of that
    span tests the same thing. The worker's own record is watched, not the console: the coordinator shows a
    round's epochs between the earlier stages' scoring (`Coordinator.run_ready`), so a short unit can end
    before its first epoch is printed.
    """
    start, records = time.time(), []
    while not records:
        assert proc.poll() is None, f"the sweep ended ({proc.returncode}) before {unit} trained; see {cwd}/stderr.txt"
        assert time.time() - start < timeout_s, f"{unit} did not start training in {timeout_s} s"
        time.sleep(0.1)
        sweep_id = sweep_id_in(cwd)
        if sweep_id is not None:
            folder = root / "storage" / schema.unit_folder(sweep_id, unit)
            records = [json.loads(p.read_text()) for p in (folder / schema.UNIT_ATTEMPTS).glob("*.json")]
    [worker] = records  # one worker per unit: the only one that wrote into its folder yet
    process = Path(f"/proc/{worker['pid']}")
    assert process.exists(), f"{unit}'s worker (pid {worker['pid']}) finished before it could be killed"
    cmdline = (process / "cmdline").read_bytes()
    assert b"RayTrainWorker" in cmdline, f"pid {worker['pid']} is not a Ray Train worker: {cmdline!r}"
    assert not (folder / schema.UNIT_SUMMARY).exists(), f"{unit} was stored before its worker could be killed"
    os.kill(worker["pid"], signal.SIGKILL)
    return worker["pid"]


@pytest.fixture(scope="module")
def concurrent_sweeps(tmp_path_factory: pytest.TempPathFactory) -> ConcurrentSweeps:
    root = tmp_path_factory.mktemp("faults")
    config = sweep_config(root)
    procs = {}
    t0 = time.time()
    try:
        for name in ("killed", "undisturbed"):
            (root / name).mkdir()
            procs[name] = start_sweep_cli(config, root / name)
        killed_pid = kill_training_worker(procs["killed"], root / "killed", root, KILLED_UNIT)
        codes = {name: wait_sweep(proc, root / name, timeout_s=900) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    for name, code in codes.items():
        assert code == 0, f"{name} sweep failed ({code}):\n" + (root / name / "stderr.txt").read_text()[-3000:]
    sweeps = ConcurrentSweeps(root, {name: sweep_id_in(root / name) for name in procs}, killed_pid, time.time() - t0)
    print(f"two concurrent smoke sweeps, one worker killed: {sweeps.wall_s:.0f} s")
    return sweeps


def comparable_stage(folder: Path, stage: str) -> dict:
    """A finished stage's saved selection and scores, without its wall time."""
    saved = json.loads((folder.parents[1] / schema.stage_path(folder.name, stage)).read_text())
    saved["report"].pop("wall_time_s")
    return saved


def mlflow_client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(store_uri(root))


def runs_by_sweep(root: Path) -> dict[str, dict[str, list]]:
    """sweep id -> unit -> runs, of every run in the store's `kdsed` experiment."""
    client = mlflow_client(root)
    experiment = client.get_experiment_by_name(schema.MLFLOW_EXPERIMENT)
    out: dict[str, dict[str, list]] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        tags = run.data.tags
        out.setdefault(tags[schema.TAG_SWEEP_ID], {}).setdefault(tags[schema.TAG_UNIT], []).append(run)
    return out


def selection_and_scores(run) -> tuple[dict, dict]:
    """A stage run's per-class selection params and its score metrics (not its timings)."""
    selection = {f(c) for f in (schema.winner_param, schema.window_param, schema.threshold_param) for c in CLASSES}
    params = {k: v for k, v in run.data.params.items() if k in selection}
    scores = tuple(f"{prefix}_" for prefix in (schema.VAL, schema.EVAL, schema.PSEUDO))
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith(scores)}
    return params, metrics


# ---- (a) a training worker killed mid-training --------------------------------------------------------


def test_killed_worker_is_retried_and_the_retry_is_logged(concurrent_sweeps):
    from kdsed.sweep.storage import Storage
    from kdsed.sweep.units import read_attempts

    s = concurrent_sweeps
    killed = s.state("killed")
    # These sweeps train one unit at a time (`sweep_config`), so each unit has a TorchTrainer of its own and
    # the restarted worker group held the killed unit alone.
    assert killed["units"][KILLED_UNIT]["attempts"] == 2
    assert {u: r["attempts"] for u, r in killed["units"].items() if u != KILLED_UNIT} == \
        {u: 1 for u in killed["units"] if u != KILLED_UNIT}
    assert {r["attempts"] for r in s.state("undisturbed")["units"].values()} == {1}
    # Ray Train started a second worker group for the same fit: a new process, after the killed one.
    records = read_attempts(Storage(str(s.root / "storage")), schema.unit_folder(s.ids["killed"], KILLED_UNIT))
    assert len(records) == 2 and records[0]["rank"] == records[1]["rank"] and records[0]["fit_id"] == records[1]["fit_id"]
    assert records[0]["pid"] == s.killed_pid != records[1]["pid"]
    summary = json.loads((s.folder("killed") / "units" / KILLED_FOLDER / schema.UNIT_SUMMARY).read_text())
    assert summary["attempt"] == 2
    # The sweep's log says so, twice: when the retry starts and when the unit is done.
    log = s.stderr("killed")
    assert f"[{KILLED_UNIT}] RETRY: attempt 2 (a failed unit is retried up to 2 times)" in log
    assert f"{KILLED_UNIT} trained after 1 failed attempt(s)" in log
    assert "RETRY" not in s.stderr("undisturbed")


def test_retried_unit_gives_the_undisturbed_outcome(concurrent_sweeps):
    import torch

    s = concurrent_sweeps
    units = {name: s.folder(name) / "units" / KILLED_FOLDER for name in s.ids}
    # Training restarted from scratch, seeded: the same weights and outputs, bit for bit.
    outputs = {name: u / schema.UNIT_OUTPUTS for name, u in units.items()}
    with np.load(outputs["killed"]) as a, np.load(outputs["undisturbed"]) as b:
        assert set(a.files) == set(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    weights = {name: torch.load(u / schema.CHECKPOINT_FILE, weights_only=True)["state_dict"]
               for name, u in units.items()}
    for key, value in weights["undisturbed"].items():
        assert torch.equal(weights["killed"][key], value), key
    # Hence the same selections and scores in every stage, in storage and in MLflow.
    for stage in STAGES:
        assert comparable_stage(s.folder("killed"), stage) == comparable_stage(s.folder("undisturbed"), stage), stage
    runs = runs_by_sweep(s.root)
    killed, undisturbed = (selection_and_scores(runs[s.ids[n]]["pass-2"][0]) for n in ("killed", "undisturbed"))
    assert len(killed[0]) == 3 * len(CLASSES)  # every class's winner, window and threshold
    assert killed == undisturbed


# ---- (b) two sweeps at once against one MLflow store and one storage root --------------------------------


def test_concurrent_sweeps_keep_their_own_runs(concurrent_sweeps):
    s = concurrent_sweeps
    assert s.ids["killed"] != s.ids["undisturbed"]
    runs = runs_by_sweep(s.root)
    assert set(runs) == set(s.ids.values())  # nothing else, nothing without a sweep id
    units = set(runs[s.ids["killed"]])
    assert units == {schema.SWEEP_UNIT, *STAGES, "topline/deep", "topline/shallow", "pass-1/deep", "pass-2/deep-none",
                     "pass-2/shallow-median"}
    for sweep_id in s.ids.values():
        mine = runs[sweep_id]
        assert set(mine) == units
        assert {u: len(r) for u, r in mine.items()} == {u: 1 for u in units}  # exactly one run per unit
        ids = {r[0].info.run_id for r in mine.values()}
        for unit, [run] in mine.items():
            assert run.info.status == "FINISHED", (sweep_id, unit)
            if unit != schema.SWEEP_UNIT:  # its parent is a run of the same sweep
                assert run.data.tags[schema.TAG_PARENT_RUN] in ids, (sweep_id, unit)
        state = read_states(s.root)[sweep_id]
        assert state["finished"] and state["stages_done"] == STAGES
        assert state["parent_run_id"] == mine[schema.SWEEP_UNIT][0].info.run_id


def test_concurrent_sweeps_keep_their_own_files(concurrent_sweeps):
    import pyarrow.parquet as pq

    s = concurrent_sweeps
    assert sorted(p.name for p in (s.root / "storage" / schema.SWEEPS).iterdir()) == sorted(s.ids.values())
    for name, sweep_id in s.ids.items():
        folder = s.folder(name)
        assert sorted(p.name for p in (folder / "units").iterdir()) == \
            ["baseline", "baseline-2stage", "pass-1__deep", "pass-2__deep-none", "pass-2__shallow-median", "tagging",
             "topline__deep", "topline__shallow"]
        for k in (1, 2):
            parquet = folder / schema.pseudo_labels_file(schema.pass_stage(k))
            meta = json.loads(pq.read_schema(parquet).metadata[b"kdsed"])
            assert meta["sweep_id"] == sweep_id and meta["pass"] == k
        # Every worker that wrote into this folder was started by this sweep's own fits: one unit at a time here
        # (`sweep_config`: a unit asks for every CPU), so one fit per unit, a restarted worker group keeping its id.
        fits = fit_ids(folder)
        assert len(fits) == 8
        assert not fits & fit_ids(s.folder("undisturbed" if name == "killed" else "killed"))
    # Ray Train and Tune results are kept per sweep too (their run names start with the sweep id).
    for kind in (schema.RAY_RUNS, schema.TUNE_RUNS):
        owners = {p.name[:len(s.ids["killed"])] for p in (s.root / "storage" / kind).iterdir()}
        assert owners == set(s.ids.values()), kind
    # One synthetic set and one feature cache, prepared by whichever sweep came first.
    assert [p.name for p in (s.root / "work" / "data").iterdir()] == ["synth-smoke-seed0"]
    assert not [p for p in (s.root / "work" / "features").iterdir() if p.name.startswith(".")]


def fit_ids(folder: Path) -> set[str]:
    """The fits whose workers recorded their starts in a sweep's unit folders."""
    return {json.loads(p.read_text())["fit_id"] for p in folder.glob(f"units/*/{schema.UNIT_ATTEMPTS}/*.json")}


def test_concurrent_sweeps_keep_their_own_model_versions(concurrent_sweeps):
    from kdsed.registry import pull_bundle, summary_rows

    s = concurrent_sweeps
    client = mlflow_client(s.root)
    runs = runs_by_sweep(s.root)
    pass_runs = {sweep_id: {runs[sweep_id][f"pass-{k}"][0].info.run_id: k for k in (1, 2)} for sweep_id in s.ids.values()}
    champions = set()
    for c in CLASSES:
        name = registered_model_name(c)
        versions = client.search_model_versions(f"name = '{name}'")
        for sweep_id in s.ids.values():
            mine = [v for v in versions if v.tags[schema.VERSION_SWEEP_ID] == sweep_id]
            # One version per pass, made from this sweep's own pass run.
            assert sorted(pass_runs[sweep_id][v.run_id] for v in mine) == [1, 2], (c, sweep_id)
            assert all(v.tags[schema.VERSION_PASS] == str(pass_runs[sweep_id][v.run_id]) for v in mine)
        assert len(versions) == 4
        champion = client.get_model_version_by_alias(name, schema.CHAMPION_ALIAS)
        assert client.get_model_version_by_alias(name, schema.pass_alias(2)).version == champion.version
        assert champion.tags[schema.VERSION_PASS] == "2"
        champions.add(champion.tags[schema.VERSION_SWEEP_ID])
    # The aliases of all classes were moved together: they name one sweep's winners, never a mix.
    assert len(champions) == 1
    bundle = pull_bundle(s.root / "pulled", tracking_uri=store_uri(s.root))
    assert [row["pass"] for row in summary_rows(bundle)] == [2] * len(CLASSES)


# ---- (c) determinism: the same seed and config, the same selections and metrics ---------------------------


def test_same_seed_and_config_give_the_same_selection_and_metrics(concurrent_sweeps, finished_sweep):
    s = concurrent_sweeps
    tmp, _, final = finished_sweep
    reference = sweep_folder(tmp, final["sweep_id"])  # stopped, killed mid-pass-2 and resumed, alone
    for stage in STAGES:
        expected = comparable_stage(reference, stage)
        for name in s.ids:
            assert comparable_stage(s.folder(name), stage) == expected, (name, stage)
    # What the sweeps print: the results table (minus its wall-time column) and the per-class winners.
    printed = {name: printed_results(s.cwd(name) / "stdout.txt") for name in s.ids}
    expected = printed_results(tmp / "stdout.txt")
    assert "| Speech | " in expected  # the winners' table was printed and read
    assert printed == {name: expected for name in s.ids}


def printed_results(stdout: Path) -> str:
    """The Markdown tables a sweep printed at its end, without the results table's wall-time column."""
    rows = [line for line in stdout.read_text().splitlines() if line.startswith("|")]
    timed = next(line.count("|") for line in rows if "| wall s |" in line)
    return "\n".join(line.rsplit("|", 2)[0] if line.count("|") == timed else line for line in rows)


# ---- a unit that still fails after Ray Train's retries ---------------------------------------------------


def test_unit_failing_after_retries_stops_the_pass_with_the_failure_listed(concurrent_sweeps, tmp_path):
    import mlflow
    import ray

    from kdsed import schema, stages
    from kdsed.config import SweepConfig, load_yaml
    from kdsed.sweep.coordinator import Coordinator
    from kdsed.sweep.storage import Storage
    from kdsed.sweep.units import read_attempts

    cfg = load_yaml(SweepConfig, sweep_config(tmp_path))
    work = concurrent_sweeps.root / "work"  # the pair's synthetic set and feature cache: nothing to extract
    cfg = replace(cfg, data=replace(cfg.data, root=str(work / "data" / "synth-smoke-seed0"), workdir=str(work)),
                  ray=replace(cfg.ray, max_failures=1, cpus_per_variant=1.0))
    tracking_uri = mlflow.get_tracking_uri()
    coord = Coordinator(cfg)
    tagging = stages.first_units(cfg)[-1]
    good = replace(tagging, train=replace(tagging.train, epochs=1))
    # A pass-2 variant without the previous pass's pseudo-labels (never broadcast): every attempt fails the same way.
    bad = stages.pass_units(cfg, 2)[0]
    try:
        coord.set_up()
        with pytest.raises(RuntimeError) as failed:
            coord.train_units([good, bad])
    finally:
        ray.shutdown()
        mlflow.set_tracking_uri(tracking_uri)
    message = str(failed.value)
    assert message.startswith("units failed after Ray's retries (finished units are saved; use --resume):\n")
    assert f"\n{bad.name}: " in message and "'previous'" in message and f"\n{good.name}: " not in message
    # The failing unit was tried 1 + max_failures times (in place, by its own rank of the round's trainer);
    # the other unit of the round finished and was saved.
    storage = Storage(cfg.tracking.storage)
    assert [r["rank"] for r in read_attempts(storage, coord.unit_folder(bad))] == [1, 1]
    saved = read_states(tmp_path)[coord.state.sweep_id]
    assert list(saved["units"]) == [good.name] and saved["units"][good.name]["attempts"] == 1
    assert storage.exists(f"{coord.unit_folder(good)}/{schema.CHECKPOINT_FILE}")
    assert not storage.exists(f"{coord.unit_folder(bad)}/{schema.CHECKPOINT_FILE}")


# ---- the pieces that make sharing safe, on their own ----------------------------------------------------


def test_locked_sqlite_writes_are_retried_and_other_errors_are_not():
    from mlflow.exceptions import MlflowException

    from kdsed.sweep.tracking import retry_when_locked

    calls = []

    def write(value):
        calls.append(value)
        if len(calls) < 3:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return value

    assert retry_when_locked(write, delays_s=(0.0, 0.0, 0.0))("run") == "run" and calls == ["run"] * 3
    calls.clear()
    with pytest.raises(MlflowException, match="locked"):  # still locked after every delay: the error goes up
        retry_when_locked(write, delays_s=(0.0,))("run")
    assert len(calls) == 2

    def bad(value):
        calls.append(value)
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: no such run")

    calls.clear()
    with pytest.raises(MlflowException, match="no such run"):
        retry_when_locked(bad, delays_s=(0.0, 0.0))("run")
    assert calls == ["run"]


def test_resume_picks_the_unfinished_sweep_of_the_same_config(tmp_path):
    from kdsed.sweep.state import SweepState, open_state
    from kdsed.sweep.storage import Storage

    storage = Storage(str(tmp_path))
    for sweep_id, digest, created, finished in (("a", "cfg", 1.0, False), ("b", "cfg", 2.0, True),
                                                ("c", "other", 3.0, False)):
        SweepState(sweep_id, digest, 2, created=created, finished=finished).save(storage)
    assert SweepState.latest(storage, "cfg").sweep_id == "a"  # not the newer finished one, nor another config's
    assert SweepState.latest(storage).sweep_id == "c"
    assert open_state(storage, "cfg", 2, True).sweep_id == "a"
    assert open_state(storage, "cfg", 2, "b").sweep_id == "b"  # by id, even a finished one
    with pytest.raises(ValueError, match="sweep c was started with another configuration"):
        open_state(storage, "cfg", 2, "c")
    with pytest.raises(FileNotFoundError, match="no sweep zzz in"):
        open_state(storage, "cfg", 2, "zzz")
    new = {open_state(storage, "cfg", 2, False).sweep_id for _ in range(20)}  # all within a second or two
    assert len(new) == 20 and not new & {"a", "b", "c"}
    assert len(SweepState.all(storage)) == 23
