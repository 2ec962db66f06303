"""`--resume` is keyed on what defines a sweep's results, not on where it is stored or how it runs."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from kdsed.config import ConfigError, SweepConfig, config_digest, load_yaml
from kdsed.sweep.state import SweepState, data_fingerprint, find_resumable, open_state, sweep_key
from kdsed.sweep.storage import Storage

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def smoke() -> SweepConfig:
    return load_yaml(SweepConfig, REPO / "sweeps" / "smoke.yaml")


def finished(storage: Storage, cfg: SweepConfig, sweep_id: str = "s1", passes: int = 2) -> SweepState:
    """A sweep of `cfg` that finished `passes` passes, as the coordinator leaves it."""
    key = sweep_key(cfg)
    state = SweepState(sweep_id, key.digest, passes, results=key.described, finished=True,
                       stages_done=["baseline", "tagging", *(f"pass-{k}" for k in range(1, passes + 1))])
    state.save(storage)
    return state


def test_where_and_how_a_sweep_runs_does_not_change_its_key(smoke: SweepConfig, tmp_path: Path) -> None:
    moved = replace(smoke,
                    tracking=replace(smoke.tracking, storage=str(tmp_path / "bigger-disk"),
                                     tracking_uri=f"sqlite:///{tmp_path}/elsewhere.db", experiment="other"),
                    ray=replace(smoke.ray, address="auto", cpus_per_variant=3.0, tune_trials_per_variant=5),
                    distill=replace(smoke.distill, passes=7),
                    data=replace(smoke.data, workdir=str(tmp_path / "work")),
                    train=replace(smoke.train, device="cpu", num_threads=2))
    assert sweep_key(moved).digest == sweep_key(smoke).digest
    assert config_digest(moved) != config_digest(smoke)  # the old key: every one of these broke --resume
    for changed in (replace(smoke, train=replace(smoke.train, epochs=3)),
                    replace(smoke, train=replace(smoke.train, seed=1)),
                    replace(smoke, data=replace(smoke.data, synth_seed=1)),
                    replace(smoke, deep=replace(smoke.deep, width=0.25)),
                    replace(smoke, features=replace(smoke.features, n_mels=32)),
                    replace(smoke, distill=replace(smoke.distill, pseudo_median_window=5))):
        assert sweep_key(changed).digest != sweep_key(smoke).digest


def test_a_data_folder_is_known_by_its_metadata_not_its_path(smoke_dataset: Path, tmp_path: Path,
                                                             smoke: SweepConfig) -> None:
    copy = Path(shutil.copytree(smoke_dataset / "metadata", tmp_path / "moved" / "metadata"))
    assert data_fingerprint(copy.parent) == data_fingerprint(smoke_dataset)
    at = {root: sweep_key(replace(smoke, data=replace(smoke.data, root=str(root))))
          for root in (smoke_dataset, copy.parent)}
    assert at[smoke_dataset].digest == at[copy.parent].digest != sweep_key(smoke).digest
    weak = copy / "train" / "weak.csv"
    weak.write_text(weak.read_text().replace("Speech", "Dog", 1))
    assert data_fingerprint(copy.parent) != data_fingerprint(smoke_dataset)


def test_a_moved_storage_and_more_passes_continue_a_finished_sweep(smoke: SweepConfig, tmp_path: Path) -> None:
    old = Storage(str(tmp_path / "old"))
    finished(old, smoke)
    shutil.move(tmp_path / "old", tmp_path / "new")  # the user moved the storage to a bigger disk
    new = Storage(str(tmp_path / "new"))
    more = replace(smoke, distill=replace(smoke.distill, passes=3),
                   tracking=replace(smoke.tracking, storage=new.root_uri))
    state = open_state(new, sweep_key(more), 3, True)
    assert (state.sweep_id, state.passes, state.finished, state.passes_done) == ("s1", 3, False, 2)
    assert SweepState.load(new, "s1").passes == 3  # saved: the coordinator goes on with pass 3
    back = open_state(new, sweep_key(smoke), 2, True)  # back to 2 passes before pass 3 ran: finishes at once
    assert (back.sweep_id, back.passes, back.finished) == ("s1", 2, False)


def test_fewer_passes_than_finished_are_refused_naming_the_flag(smoke: SweepConfig, tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    finished(storage, smoke, passes=3)
    with pytest.raises(ConfigError, match=r"^distill\.passes \(--passes\) 2: sweep s1 has finished 3 passes; "
                                          r"resume with --passes 3 or more"):
        open_state(storage, sweep_key(smoke), 2, True)


def test_a_change_of_what_defines_the_results_is_refused_naming_the_keys(smoke: SweepConfig, tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    finished(storage, smoke)
    epochs = replace(smoke, train=replace(smoke.train, epochs=3))
    before = sorted(p.name for p in (tmp_path / "sweeps" / "s1").iterdir()), (tmp_path / "sweeps/s1/state.json").read_bytes()
    with pytest.raises(ConfigError, match=r"^--resume: sweep s1 was started with train\.epochs=2, now train\.epochs=3: "
                                          r"these define its results; .*the storage, tracking URI, Ray settings and "
                                          r"--passes may change"):
        find_resumable(storage, sweep_key(epochs), 2, True)
    with pytest.raises(ConfigError, match="sweep s1 was started with train.epochs=2"):
        open_state(storage, sweep_key(epochs), 2, True)
    assert (sorted(p.name for p in (tmp_path / "sweeps" / "s1").iterdir()),
            (tmp_path / "sweeps/s1/state.json").read_bytes()) == before


def test_a_sweep_keyed_before_this_change_still_resumes(smoke: SweepConfig, tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    SweepState("legacy", config_digest(smoke), 2, stages_done=["baseline", "tagging"]).save(storage)
    state = open_state(storage, sweep_key(smoke), 2, True)
    assert state.sweep_id == "legacy" and state.config_digest == sweep_key(smoke).digest  # re-keyed on resume
    assert state.results == sweep_key(smoke).described


def test_the_unfinished_sweep_is_preferred_to_a_finished_one(smoke: SweepConfig, tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    key = sweep_key(smoke)
    SweepState("a", key.digest, 2, created=1.0).save(storage)
    SweepState("b", key.digest, 2, created=2.0, finished=True, stages_done=["pass-1", "pass-2"]).save(storage)
    SweepState("c", "other", 2, created=3.0).save(storage)
    assert open_state(storage, key, 2, True).sweep_id == "a"
    assert open_state(storage, key, 3, "b").sweep_id == "b"  # by id; reopened for a third pass
    with pytest.raises(FileNotFoundError, match="no sweep zzz in"):
        open_state(storage, key, 2, "zzz")


def test_resume_is_checked_at_start_up_without_writing(smoke: SweepConfig, tmp_path: Path) -> None:
    import sqlite3

    from kdsed.sweep.preflight import PreflightError, check_resume

    storage = Storage(str(tmp_path / "storage"))
    state = finished(storage, smoke)
    state.parent_run_id = "run-of-the-sweep"
    state.save(storage)
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("create table runs (run_uuid text)")
    cfg = replace(smoke, distill=replace(smoke.distill, passes=3),
                  tracking=replace(smoke.tracking, storage=storage.root_uri, tracking_uri=f"sqlite:///{db}"))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")), db.read_bytes()
    with pytest.raises(PreflightError, match=r"^--resume: sweep s1's MLflow runs \(parent run run-of-the-sweep\) are "
                                             r"not in sqlite:///\S+mlflow\.db; resume with the --tracking-uri it was "
                                             r"started with"):
        check_resume(cfg, True)
    with sqlite3.connect(db) as con:
        con.execute("insert into runs values ('run-of-the-sweep')")
    check_resume(cfg, True)  # the store moved whole: fine
    with pytest.raises(FileNotFoundError, match=r"no sweep to resume in \S+nowhere \(the folder does not exist\)"):
        check_resume(replace(cfg, tracking=replace(cfg.tracking, storage=str(tmp_path / "nowhere"))), True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before[0]  # nothing created
    assert SweepState.load(storage, "s1").passes == 2  # nor changed: only the coordinator reopens it


def test_a_resumed_pass_1_reads_back_the_finished_two_stage_baseline(smoke, monkeypatch):
    """After pass 1 finished, a resumed sweep still returns (and so reports and compares with) the two-stage
    baseline's saved stage, trains nothing and broadcasts nothing for it."""
    from types import SimpleNamespace

    from kdsed.sweep.coordinator import Coordinator

    coord = object.__new__(Coordinator)
    coord.cfg = smoke
    coord.state = SimpleNamespace(stages_done=["baseline", "topline", "tagging", "baseline-2stage", "pass-1"])
    calls = []
    monkeypatch.setattr(coord, "run_stage", lambda stage, specs, **kw: calls.append(("stage", stage)) or stage,
                        raising=False)
    for name in ("train_units", "broadcast", "read_unit"):
        monkeypatch.setattr(coord, name, lambda *a, _n=name, **kw: calls.append((_n,)), raising=False)
    assert coord.run_pass(1) == ["baseline-2stage", "pass-1"]
    assert calls == [("stage", "baseline-2stage"), ("stage", "pass-1")]


def test_pass_1_scores_stage_0_while_it_trains_and_the_two_stage_baseline_once_its_unit_is_done(smoke, monkeypatch):
    """Stage 0's stages are scored in the pass-1 round (they need no further training), the two-stage baseline's
    as soon as its unit is recorded, pass 1's after its units; the stages keep the table's order."""
    from types import SimpleNamespace

    from kdsed.sweep import coordinator as coordinator_module
    from kdsed.sweep.coordinator import Coordinator
    from kdsed.sweep.workers import Placement

    coord = object.__new__(Coordinator)
    coord.cfg, coord._data, coord.timings = smoke, object(), {"training": 0.0}
    coord.state = SimpleNamespace(stages_done=[], units={})
    calls = []

    def fit_all(specs, placement, t0, progress, tasks):  # the round's loop: a unit recorded, then what is ready
        for spec in specs:
            coord.state.units[spec.name] = "record"
            calls.append(("trained", spec.name))
            coord.run_ready(tasks)
        return [], 0.0

    monkeypatch.setattr(coordinator_module, "plan_placement", lambda *a, **kw: Placement(1, False, 1.0, 1))
    monkeypatch.setattr(coordinator_module.distill, "baseline_stage1_tags", lambda *a: None)
    monkeypatch.setattr(coord, "_fit_all", fit_all, raising=False)
    monkeypatch.setattr(coord, "run_stage", lambda stage, specs, **kw: calls.append(("stage", stage)) or stage,
                        raising=False)
    for name in ("broadcast", "read_unit"):
        monkeypatch.setattr(coord, name, lambda *a, **kw: SimpleNamespace(outputs=None), raising=False)
    stage_0 = [lambda stage=stage: coord.run_stage(stage, []) for stage in ("baseline", "topline", "tagging")]
    assert coord.run_pass(1, meanwhile=stage_0) == ["baseline", "topline", "tagging", "baseline-2stage", "pass-1"]
    assert calls == [("trained", "baseline-2stage"), ("stage", "baseline"), ("stage", "topline"), ("stage", "tagging"),
                     ("stage", "baseline-2stage"), ("trained", "pass-1/deep"), ("stage", "pass-1")]
