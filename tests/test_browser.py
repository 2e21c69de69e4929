"""End to end in a real browser: a smoke sweep, `tuner ui`, and the MLflow UI in headless Chromium.

Needs Debian's chromium (/usr/bin/chromium; .ci/run installs it) and the playwright package (the
`test` extra). Saves a screenshot to the test's temporary folder, or to $TUNER_ARTIFACTS/mlflow_ui.png
when that is set; nothing is written into the repository.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request

import pytest
import yaml
from helpers import kill_group

pytestmark = pytest.mark.ray
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def test_mlflow_ui_shows_parent_children_and_a_chart(ray_session, tmp_path, browser):
    from tuner import spec as specmod
    from tuner import sweep

    body = {"name": "ui", "model": "bpr_mf",
            "data": {"synthetic": {"n_users": 150, "n_items": 80, "mean_length": 10, "seed": 1}},
            "fixed": {"epochs": 3},
            "space": {"loss": {"type": "categorical", "choices": ["bpr", "ce"]},
                      "lr": {"type": "float", "low": 1.0e-3, "high": 5.0e-2, "log": True}},
            "search": {"samples": 3, "concurrency": 2, "seed": 0}}
    (tmp_path / "ui.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    res = sweep.run(specmod.load(str(tmp_path / "ui.yaml")), output=str(tmp_path / "out"), verbose=0)

    ui = subprocess.Popen([sys.executable, "-m", "tuner", "ui", res.sweep_dir, "--port", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        line = ui.stdout.readline()  # printed only once the server answers
        m = re.search(r"(http://127\.0\.0\.1:\d+/)(\S*)", line)
        assert m, line
        base, link = m.group(1), m.group(2)
        assert link == f"#/experiments/{res.experiment_id}/runs/{res.parent_run_id}"
        urllib.request.urlopen(base + "health", timeout=10).close()
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}#/experiments/{res.experiment_id}/runs?compareRunsMode=CHART")
        parent_name = page.get_by_text(re.compile(r"^ui \d{8}-\d{6}$")).first
        parent_name.wait_for(timeout=60000)
        page.locator("button[data-component-id*='runnamecellrenderer']").first.click()  # expand the sweep
        for n in range(1, 4):
            page.get_by_text(re.compile(f"^trial-{n:03d} ")).first.wait_for(timeout=30000)
        page.get_by_placeholder("Search metric charts").fill("val_ndcg_10")
        chart = page.locator("[data-testid*='chart'], .js-plotly-plot, canvas, svg.main-svg").first
        chart.wait_for(state="attached", timeout=30000)  # a metric chart is drawn
        page.get_by_text("val_ndcg_10").first.wait_for(state="visible", timeout=30000)
        out = os.environ.get("TUNER_ARTIFACTS") or str(tmp_path)
        os.makedirs(out, exist_ok=True)
        page.screenshot(path=os.path.join(out, "mlflow_ui.png"))
        print(f"screenshot: {os.path.join(out, 'mlflow_ui.png')}")
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # tuner ui ends its server's whole group
        try:
            ui.wait(timeout=30)
        finally:
            kill_group(ui)
