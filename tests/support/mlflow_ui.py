"""Drive the real MLflow UI in headless Chromium against a sweep's tracking store.

Used by `tests/sweep/test_browser.py` (against a `smoke` sweep) and, as a script, to take the README's
screenshots of a real sweep:

    python tests/support/mlflow_ui.py --tracking-uri sqlite:///kdsed_runs/mlflow.db --out docs/img

Needs Debian's `chromium` (`apt-get install chromium`) and the `playwright` Python package (the
`test` extra); Playwright drives the system Chromium, so nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
# The machine has no internet: without these Chromium keeps trying (and failing) to reach Google's hosts.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
# MLflow 3 opens in its GenAI view with an assistant panel; start in the classic model-training view.
UI_PREFERENCES = """
localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
"""
EXPAND_BUTTON = 'button[data-component-id*="runnamecellrenderer"]'
UI_TIMEOUT_MS = 60_000


def find_chromium() -> str | None:
    """Path of a system Chromium, or None."""
    for path in (os.environ.get("KDSED_CHROMIUM"), *CHROMIUM_CANDIDATES, shutil.which("chromium")):
        if path and Path(path).is_file():
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(tracking_uri: str, log_file: Path, *, timeout_s: float = 120) -> Iterator[str]:
    """`mlflow server` on a free loopback port against `tracking_uri`; yields its base URL."""
    port = free_port()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with open(log_file, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not come up on {url}; its log: {log_file}\n"
                                   + log_file.read_text()[-2000:])
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class UiFindings:
    """What the browser saw, page by page: the visible text and the screenshot of each."""

    text: dict[str, str] = field(default_factory=dict)
    screenshots: dict[str, Path] = field(default_factory=dict)


def _api(url: str, path: str, query: dict) -> dict:
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}", timeout=30) as r:
        return json.loads(r.read())


def _runs_of_pass(url: str, experiment_id: str, pass_index: int) -> list[dict]:
    body = json.dumps({"experiment_ids": [experiment_id], "filter": f"tags.`kdsed.pass` = '{pass_index}'",
                       "max_results": 100}).encode()
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read()).get("runs", [])


def capture_ui(url: str, out_dir: Path, *, experiment: str = "kdsed", pass_index: int = 2,
               class_name: str = "Dog") -> UiFindings:
    """Visit the experiment, a pass's runs, their comparison and a class's registry page; screenshot each.

    Pages: `experiments` (list), `runs` (the sweep's run tree expanded down to pass `pass_index`),
    `compare` (that pass's variant runs side by side, per-class eval F1 rows in view), `models` (registry list),
    `registry` (the page of `kdsed-<class_name>`), `loss_curves` (the charts of one of that pass's unit runs), `lineage` (the overview of the run its champion came from,
    reached by the link on the champion version's page).
    """
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    experiment_id = _api(url, "experiments/get-by-name", {"experiment_name": experiment})["experiment"]["experiment_id"]
    runs = _runs_of_pass(url, experiment_id, pass_index)
    variants = [r["info"]["run_id"] for r in runs if "/" in r["info"]["run_name"]]
    findings = UiFindings()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1500, "height": 950})
        context.add_init_script(UI_PREFERENCES)
        context.set_default_timeout(UI_TIMEOUT_MS)
        page = context.new_page()

        def shot(name: str, wait_for: str | None = None, *, full_page: bool = False) -> None:
            if wait_for:
                page.get_by_text(wait_for, exact=True).first.wait_for(state="visible")
            page.wait_for_timeout(800)  # let charts and fonts settle before the screenshot
            findings.text[name] = page.inner_text("body")
            findings.screenshots[name] = out_dir / f"mlflow_{name}.png"
            page.screenshot(path=str(findings.screenshots[name]), full_page=full_page)

        page.goto(f"{url}/#/experiments")
        shot("experiments", experiment)

        search = urllib.parse.quote(f"tags.`kdsed.pass` = '{pass_index}'")
        page.goto(f"{url}/#/experiments/{experiment_id}/runs?searchFilter={search}")
        sweep_row = page.locator(".ag-row", has_text="sweep-")
        sweep_row.first.locator(EXPAND_BUTTON).click()
        stage_row = page.locator(".ag-row", has=page.get_by_text(f"pass-{pass_index}", exact=True))
        stage_row.first.locator(EXPAND_BUTTON).click()
        shot("runs", next(r["info"]["run_name"] for r in runs if "/" in r["info"]["run_name"]))

        # The comparison: differing params and metrics only, run details to metrics table in one picture.
        page.set_viewport_size({"width": 1900, "height": 2200})  # room for six variants side by side
        runs_param = urllib.parse.quote(json.dumps(variants))
        page.goto(f"{url}/#/compare-runs?runs={runs_param}&experiments={urllib.parse.quote(json.dumps([experiment_id]))}")
        page.get_by_text(f"eval_f1_{class_name}", exact=True).first.wait_for(state="visible")
        findings.text["compare_all"] = page.inner_text("body")
        switches = page.get_by_role("switch")  # "Show diff only": parameters, metrics, tags
        switches.nth(0).click()
        switches.nth(1).click()
        page.get_by_text("Visualizations", exact=True).click()  # fold the plots away
        page.wait_for_timeout(800)
        top = page.get_by_text("Run details", exact=True).bounding_box()
        bottom = page.get_by_text("Artifacts", exact=True).last.bounding_box()
        findings.text["compare"] = page.inner_text("body")
        findings.screenshots["compare"] = out_dir / "mlflow_compare.png"
        page.screenshot(path=str(findings.screenshots["compare"]),
                        clip={"x": 180, "y": top["y"] - 10, "width": 1720, "height": bottom["y"] - top["y"]})
        page.set_viewport_size({"width": 1500, "height": 950})

        page.goto(f"{url}/#/models")
        shot("models", f"kdsed-{class_name}")
        page.goto(f"{url}/#/models/kdsed-{class_name}")
        page.get_by_text("champion").first.wait_for(state="visible")
        shot("registry", f"kdsed-{class_name}")

        # A unit's loss curves, logged epoch by epoch while it trained: its run's "Model metrics" tab.
        unit = next(r for r in runs if "/" in r["info"]["run_name"])
        page.goto(f"{url}/#/experiments/{experiment_id}/runs/{unit['info']['run_id']}")
        page.get_by_role("tab", name="Model metrics").first.click()
        page.get_by_placeholder("Search metric charts").fill("loss")
        shot("loss_curves", "val_loss")

        # Lineage, as a person walks it: the champion's version page, its source run (the pass that
        # registered it), that run's overview, where the pseudo-labels it trained on are listed.
        champion = _api(url, "registered-models/alias", {"name": f"kdsed-{class_name}", "alias": "champion"})
        page.goto(f"{url}/#/models/kdsed-{class_name}/versions/{champion['model_version']['version']}")
        page.locator(f"a[href*='/runs/{champion['model_version']['run_id']}']").first.click()
        page.get_by_role("tab", name="Overview").first.click()
        shot("lineage", "Datasets")
        browser.close()
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshots of the MLflow UI on a sweep's tracking store.")
    parser.add_argument("--tracking-uri", default="sqlite:///kdsed_runs/mlflow.db")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--pass-index", type=int, default=2, help="which pass's variants to compare")
    parser.add_argument("--class-name", default="Dog", help="whose registry page to show")
    args = parser.parse_args(argv)
    if find_chromium() is None:
        print("no Chromium found: apt-get install chromium (or set KDSED_CHROMIUM)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with mlflow_server(args.tracking_uri, args.out / "mlflow_server.log") as url:
        findings = capture_ui(url, args.out, pass_index=args.pass_index, class_name=args.class_name)
    (args.out / "mlflow_server.log").unlink(missing_ok=True)
    for name, path in findings.screenshots.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
