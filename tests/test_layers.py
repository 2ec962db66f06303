"""The import graph of `kdsed/`: layers import one way, the runners and the report do not import each other,
and Ray and MLflow stay at the edges (docs/architecture.md draws the same layers)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kdsed"

#: Lowest first; a module may import its own layer and the layers below. A package name covers its modules.
LAYERS = [
    {"constants", "atomic", "limits", "failures", "safety", "yaml_input"},
    {"schema", "config", "events", "stores"},
    {"data", "models", "metrics", "postprocess", "pseudolabels", "scores_io", "features"},
    {"prepare", "search", "plots", "results", "train", "bundle", "evaluate", "compare"},
    {"distill", "topline", "baseline_recipe", "predict", "registry"},
    {"stages"},
    {"experiment", "sweep", "report", "report_outputs", "ablations"},
]
#: The two runners and the report stand side by side: none imports another.
SIDE_BY_SIDE = {"experiment", "sweep", "report"}
#: Where Ray and MLflow may be imported.
EDGES = {"ray": {"sweep"}, "mlflow": {"sweep", "registry", "report"}}


def imports() -> dict[str, set[str]]:
    """Module (`sweep.coordinator`) -> the modules it imports, kdsed's (`kdsed.x`) and third-party top-level names."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found |= {f"{node.module}.{a.name}" for a in node.names} if node.module == "kdsed" else {node.module}
        graph[module] = found
    return graph


def top(module: str) -> str:
    return module.split(".")[0]


def layer(module: str) -> int:
    [index] = [i for i, names in enumerate(LAYERS) if top(module) in names] or [None]
    assert index is not None, f"kdsed.{module} is in no layer of {__file__}: place it (and in docs/architecture.md)"
    return index


def test_every_module_imports_its_own_layer_or_below():
    wrong = []
    for module, found in imports().items():
        if module == "__init__":
            continue
        for target in (f.removeprefix("kdsed.") for f in found if f.startswith("kdsed.")):
            if top(target) != top(module) and layer(target) > layer(module):
                wrong.append(f"kdsed.{module} imports kdsed.{target}")
    assert not wrong, "\n".join(wrong)


def test_the_runners_and_the_report_do_not_import_each_other():
    crossing = [f"kdsed.{module} imports {f}" for module, found in imports().items() if top(module) in SIDE_BY_SIDE
                for f in found if f.startswith("kdsed.") and top(f.removeprefix("kdsed.")) in SIDE_BY_SIDE - {top(module)}]
    assert not crossing, "\n".join(crossing)
    # The case the rule was written for: the sweep and the report once imported the serial runner.
    assert not any("kdsed.experiment" in found for module, found in imports().items() if module != "experiment")


def test_ray_and_mlflow_stay_at_the_edges():
    for library, allowed in EDGES.items():
        users = {top(m) for m, found in imports().items() if any(f.split(".")[0] == library for f in found)}
        assert users <= allowed, f"{library} imported by {sorted(users - allowed)}"
        assert users, f"nothing imports {library}: is this test still reading the package?"
