"""End to end in a real browser: a smoke sweep, `tuner ui`, and the MLflow UI in headless Chromium.

Needs Debian's chromium (/usr/bin/chromium; .ci/run installs it) and the playwright package (the
`test` extra). Saves a screenshot to artifacts/mlflow_ui.png (or $TUNER_ARTIFACTS/mlflow_ui.png).
"""

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

pytestmark = pytest.mark.ray
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
        line = ui.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)(\S*)", line)
        assert m, line
        base, link = m.group(1), m.group(2)
        assert link == f"#/experiments/{res.experiment_id}/runs/{res.parent_run_id}"
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                urllib.request.urlopen(base + "health", timeout=2).close()
                break
            except OSError:
                time.sleep(1)
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
        page.get_by_text("val_ndcg_10").first.wait_for(state="attached", timeout=30000)
        page.wait_for_timeout(2000)  # let the plot finish drawing before the screenshot
        out = os.environ.get("TUNER_ARTIFACTS", os.path.join(ROOT, "artifacts"))
        os.makedirs(out, exist_ok=True)
        shot = os.path.join(out, "mlflow_ui.png")
        page.screenshot(path=shot)
        assert os.path.getsize(shot) > 20000
        print(f"screenshot: {shot}")
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)
