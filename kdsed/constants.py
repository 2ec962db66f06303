"""Facts of the DCASE 2018 Task 4 setup, defined once and imported everywhere."""

from __future__ import annotations

from pathlib import Path

Seconds = float

#: The 10 target classes, in the order of every model output and metric table.
CLASSES: tuple[str, ...] = (
    "Alarm_bell_ringing",
    "Blender",
    "Cat",
    "Dishes",
    "Dog",
    "Electric_shaver_toothbrush",
    "Frying",
    "Running_water",
    "Speech",
    "Vacuum_cleaner",
)
NUM_CLASSES: int = len(CLASSES)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

#: Nominal clip length; shorter clips exist in the real data and are padded.
CLIP_DURATION_S: Seconds = 10.0

#: Event-based metric of the task (sed_eval semantics).
ONSET_COLLAR_S: Seconds = 0.2
OFFSET_COLLAR_RATE: float = 0.2

#: Subsets of the DCASE 2018 Task 4 layout.
WEAK = "weak"
UNLABEL_IN_DOMAIN = "unlabel_in_domain"
UNLABEL_OUT_OF_DOMAIN = "unlabel_out_of_domain"
TEST = "test"
EVAL = "eval"
TRAIN_SUBSETS: tuple[str, ...] = (WEAK, UNLABEL_IN_DOMAIN, UNLABEL_OUT_OF_DOMAIN)
SUBSETS: tuple[str, ...] = TRAIN_SUBSETS + (TEST, EVAL)

#: Where a sweep writes by default (relative to the working directory).
DEFAULT_WORKDIR = "kdsed_runs"
SQLITE_URI_PREFIX = "sqlite:///"  # a local MLflow store: sqlite:///FILE (parsed by kdsed.schema.sqlite_path)
DEFAULT_TRACKING_URI = f"{SQLITE_URI_PREFIX}{DEFAULT_WORKDIR}/mlflow.db"
DEFAULT_STORAGE = f"{DEFAULT_WORKDIR}/storage"

#: The sweep `python -m kdsed.sweep` (and `python -m kdsed.experiment`) runs without --config: the budget that
#: fits 20 minutes on 2 cores. `sweeps/laptop.yaml` (37 min) and `sweeps/laptop-long.yaml` give more F1 for more time.
DEFAULT_SWEEP_CONFIG = Path(__file__).resolve().parents[1] / "sweeps" / "laptop-fast.yaml"
MLFLOW_EXPERIMENT = "kdsed"
#: One registered model per class in the MLflow Model Registry, e.g. `kdsed-Dog`.
REGISTERED_MODEL_PREFIX = "kdsed-"
CHAMPION_ALIAS = "champion"
