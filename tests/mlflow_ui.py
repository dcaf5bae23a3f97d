"""The MLflow UI as a person sees it: `mlflow server` on a free loopback port, driven in headless Chromium.

Also a script that refreshes the README's screenshots from a store made by a real search:
    python -m tests.mlflow_ui DIR_WITH_MLRUNS docs/ STUDY_NAME
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from devtools import services
from devtools.commands import tracking_uri
from tests.conftest import mlflow_client

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browser download is not reachable
# What works as root, in a container, offline.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1800, "height": 900}
TIMEOUT_MS = 60_000  # the React app loads slowly on 2 busy cores


@contextlib.contextmanager
def mlflow_server(cwd: Path, timeout: float = 120) -> Iterator[str]:
    """`mlflow server` over cwd's sqlite store, as the README says to start it; yields its base URL."""
    cwd = Path(cwd)
    with services.mlflow_server(
        tracking_uri(cwd), cwd / "mlruns" / "artifacts", cwd / "mlflow-server.log", timeout
    ) as url:
        yield url


def wait_for(url: str, server: subprocess.Popen, timeout: float) -> str:
    """GET `url` until it answers 200 (its body), while `server` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{server.args[0]} exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return answer.read().decode()
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url}: no answer after {timeout}s")


@contextlib.contextmanager
def browser_page(profile: Path):
    """A page in a fresh headless Chromium (its own profile directory)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            context.close()


def open_runs_table(page, url: str, experiment_id: str, parent_name: str, columns: list[str]) -> None:
    """The experiment's training runs, the study's parent run expanded, with `columns` shown."""
    page.goto(f"{url}/#/experiments/{experiment_id}/runs")
    parent_cell = page.locator(".ag-cell", has_text=parent_name).first
    parent_cell.wait_for()
    _close_assistant(page)
    page.get_by_role("button", name="Columns").click()
    for column in columns:
        page.get_by_text(column, exact=True).last.click()
    page.keyboard.press("Escape")
    parent_cell.locator("button").first.click()  # the expander of the nested child runs


def table_rows(page) -> dict[str, dict[str, str]]:
    """Run name -> {column header: cell text} for every row the runs table renders."""
    return page.evaluate(
        """() => {
          const headers = {};
          document.querySelectorAll('.ag-header-cell[col-id]').forEach(h => {
            headers[h.getAttribute('col-id')] = h.innerText.trim();
          });
          const rows = {};
          document.querySelectorAll('.ag-row[row-id]').forEach(r => {
            const id = r.getAttribute('row-id');
            rows[id] = rows[id] || {};
            r.querySelectorAll('.ag-cell[col-id]').forEach(c => {
              rows[id][headers[c.getAttribute('col-id')] || c.getAttribute('col-id')] = c.innerText.trim();
            });
          });
          return rows;
        }"""
    )


def open_comparison(page, url: str, experiment_id: str, run_ids: list[str], metric: str) -> None:
    """The compare view of `run_ids`, then the chart of `metric` by step (its link in the metrics table)."""
    runs = urllib.parse.quote(json.dumps(run_ids))
    page.goto(f"{url}/#/compare-runs?runs={runs}&experiments={urllib.parse.quote(json.dumps([experiment_id]))}")
    link = page.get_by_role("link", name=metric, exact=True)
    link.wait_for()
    _close_assistant(page)
    link.click()
    page.get_by_text("Step", exact=True).first.wait_for()


def comparison_chart(page, run_names: list[str], metric: str) -> dict[str, list[str]]:
    """What the chart draws once rendered: legend entries, x-axis ticks, and each line's SVG path."""
    for name in run_names:
        page.get_by_text(f"{name} ({metric})", exact=True).first.wait_for()
    lines = page.locator(".js-plotly-plot .scatterlayer .trace path.js-line")
    lines.first.wait_for(state="attached")  # the first trace may be a hidden one
    return {
        "legend": [
            f"{name} ({metric})" for name in run_names if page.get_by_text(f"{name} ({metric})", exact=True).count()
        ],
        "xticks": [t.strip() for t in page.locator(".js-plotly-plot .xtick").all_text_contents()],
        "lines": lines.evaluate_all("paths => paths.map(p => p.getAttribute('d'))"),
    }


def open_model_version(page, url: str, name: str, version: str) -> str:
    """The registered version's page; returns the text it shows (its description is the model card)."""
    page.goto(f"{url}/#/models/{urllib.parse.quote(name)}/versions/{version}")
    page.get_by_role("heading", name="Training data").first.wait_for()  # the card's markdown has rendered
    _close_assistant(page)
    return page.locator("body").inner_text()


def _close_assistant(page) -> None:
    """The assistant side panel (open by default) takes half the screen."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def screenshots(cwd: Path, out: Path, study: str, metric: str = "eval_accuracy") -> list[Path]:
    """Runs table, comparison chart of the two best trials of `study` and the champion's version page, as
    PNGs in `out`."""

    client = mlflow_client(cwd)
    trials = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`pipeline.role` = 'trial' AND tags.`pipeline.study` = '{study}'",
        order_by=[f"metrics.{metric} DESC"],
    )
    experiment_id = trials[0].info.experiment_id
    out.mkdir(parents=True, exist_ok=True)
    with mlflow_server(cwd) as url, browser_page(cwd / "chromium-profile") as page:
        open_runs_table(page, url, experiment_id, study, [metric, "num_train_epochs", "per_device_train_batch_size"])
        page.get_by_text(trials[0].info.run_name, exact=True).first.wait_for()
        page.screenshot(path=out / "mlflow-runs.png")
        open_comparison(page, url, experiment_id, [r.info.run_id for r in trials[:2]], metric)
        comparison_chart(page, [r.info.run_name for r in trials[:2]], metric)
        page.screenshot(path=out / "mlflow-compare.png")
        champion = client.get_model_version_by_alias(_registered_name(client, study), "champion")
        open_model_version(page, url, champion.name, champion.version)
        page.screenshot(path=out / "mlflow-model-version.png", full_page=True)
    return [out / "mlflow-runs.png", out / "mlflow-compare.png", out / "mlflow-model-version.png"]


def _registered_name(client, study: str) -> str:
    """The registered model the study's parent run points at (its `pipeline.model_uri` tag)."""
    parent = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`pipeline.role` = 'study' AND tags.`pipeline.study` = '{study}'",
    )[0]
    return parent.data.tags["pipeline.model_uri"].removeprefix("models:/").split("/")[0]


if __name__ == "__main__":
    print(
        screenshots(
            Path(sys.argv[1]).resolve(), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "ag_news-minilm"
        )
    )
