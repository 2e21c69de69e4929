"""End to end in a real browser: a small sweep, `tuner ui`, and the MLflow UI in headless Chromium: the
training-runs view, sorted by the trial score, lists the trials in the order of trials.csv, and the
comparison of the top 3 shows their knobs and best metric.

Needs Debian's chromium (/usr/bin/chromium; .ci/run installs it) and the playwright package (the
`test` extra). The assertions read the page's text; a screenshot of the comparison goes to the test's
tmp_path only (pytest keeps the last runs' folders), never into the repository.
"""

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from helpers import kill_group, write_spec

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


def visible_trial_order(page) -> list[str]:
    """Trial names in the runs table as shown: the grid positions rows by their row-index attribute,
    not by document order (rows keep their DOM place when a sort moves them)."""
    rows = page.locator("[role=row][row-index]").evaluate_all(
        "rows => rows.map(r => [Number(r.getAttribute('row-index')), r.innerText])")
    names = [m.group(0) for _, text in sorted(rows) for m in [re.search(r"trial-\d{3}", text)] if m]
    return list(dict.fromkeys(names))


def wait_for_order(page, want: list[str], timeout_s: float = 60) -> list[str]:
    """Poll the table until it shows `want` (the sort is applied asynchronously), with a deadline."""
    deadline = time.monotonic() + timeout_s
    got = visible_trial_order(page)
    while got != want and time.monotonic() < deadline:
        page.wait_for_timeout(250)  # a poll interval, not a fixed wait: the loop ends on the event
        got = visible_trial_order(page)
    return got


def test_mlflow_ui_training_view_sorted_by_score_matches_trials_csv(ray_session, tmp_path, browser):
    from tuner import spec as specmod
    from tuner import sweep

    body = {"name": "ui", "model": "bpr_mf",
            "data": {"synthetic": {"n_users": 150, "n_items": 80, "mean_length": 10, "seed": 1}},
            "fixed": {"epochs": 3},
            "space": {"loss": {"type": "categorical", "choices": ["bpr", "ce"]},
                      "lr": {"type": "float", "low": 1.0e-3, "high": 5.0e-2, "log": True}},
            "search": {"samples": 4, "concurrency": 2, "seed": 0}}
    res = sweep.run(specmod.load(write_spec(tmp_path, body, "ui.yaml")), output=str(tmp_path / "out"), verbose=0)
    with open(os.path.join(res.sweep_dir, "trials.csv")) as fh:
        table = list(csv.DictReader(fh))
    want = [f"trial-{int(r['trial']):03d}" for r in table]

    ui = subprocess.Popen([sys.executable, "-m", "tuner", "ui", res.sweep_dir, "--port", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        line = ui.stdout.readline()  # printed only once the server answers
        m = re.search(r"(http://127\.0\.0\.1:\d+/)(\S*)", line)
        assert m and "workflowType=machine_learning" in m.group(2), line
        urllib.request.urlopen(m.group(1) + "health", timeout=10).close()
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(m.group(0))
        page.get_by_text(re.compile(r"^ui \d{8}-\d{6}")).first.wait_for(timeout=60000)
        assert "Evaluation runs" not in page.inner_text("body")  # the training-runs view, not GenAI's

        # sort by the trial score; MLflow 3.17 ignores the URL's sort, so as a user would: the Sort menu
        page.get_by_role("button", name=re.compile("^Sort")).click()
        page.get_by_placeholder("Search").last.fill("best_val_ndcg_10")
        page.get_by_text("best_val_ndcg_10", exact=True).first.click()
        page.get_by_role("button", name=re.compile("^Sort: best_val_ndcg_10")).wait_for(timeout=30000)
        page.keyboard.press("Escape")
        assert wait_for_order(page, want) == want  # the order of trials.csv

        for name in want[:3]:  # compare the top 3: their knobs and best metric are there
            page.get_by_role("row").filter(has_text=name).get_by_role("checkbox").first.check()
        page.get_by_role("button", name=re.compile("^Compare")).first.click()
        page.get_by_text(re.compile("Comparing 3 Runs")).first.wait_for(timeout=60000)
        text = page.inner_text("body")
        for r in table[:3]:
            assert f"trial-{int(r['trial']):03d} loss={r['loss']}" in text
        assert "best_val_ndcg_10" in text and "lr" in text
        page.screenshot(path=str(tmp_path / "mlflow_compare.png"))  # for a person to look at; not asserted
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # tuner ui ends its server's whole group
        try:
            ui.wait(timeout=30)
        finally:
            kill_group(ui)
