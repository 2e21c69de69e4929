"""benchmarks/run.py: bad input exits 2 in one line; the table marks misses and computes peer ratios."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import run as bench  # noqa: E402


def test_unknown_section_is_one_line_exit_2():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--only", "eval,warp"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == "benchmarks/run.py: --only: unknown section 'warp'; valid: ttq, eval, bpr, overhead, memory"


def test_missing_data_is_one_line_exit_2(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--data", str(tmp_path / "no.txt")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no.txt" in p.stderr


def test_table_marks_misses_and_divides_by_recbole():
    ours = [bench.figure("ttq", "Time to quality: x (s)", 90.0, "s", "<= 190", True),
            bench.figure("eval", "Full-ranking eval, sasrec, all users (s)", 2.0, "s", "<= 4", True),
            bench.figure("bpr", "BPR-MF triples/s", 4e5, "1/s", "> 1,000,000", False)]
    peers = [{"section": "peers", "name": "RecBole time to val NDCG@10 >= 0.045 (s)", "value": 720.0},
             {"section": "peers", "name": "RecBole full-ranking eval, all users (s)", "value": 4.0}]
    ratios = {f["name"]: f for f in bench.side_by_side(ours, peers)}
    assert ratios["Time to quality, ours / RecBole"]["value"] == 0.125
    assert ratios["Time to quality, ours / RecBole"]["met"] is True
    assert ratios["Full-ranking eval of all users, ours / RecBole"]["met"] is False  # 0.5 > 0.25
    assert "SASRec full-CE epoch, ours / RecBole" not in ratios  # RecBole's epoch figure is missing
    text = bench.table({"sections": {"bpr": {"figures": ours[2:], "when": "now", "loadavg": [0.1]}}})
    assert "| bpr | BPR-MF triples/s | 0.40M/s | > 1,000,000 | **no** |" in text


def test_asha_replay_follows_rays_rung_rule():
    import search_efficiency as se

    # max_t 4, grace 1, reduction 2 -> rungs at epochs 1 and 2; the slow starter (5 at the end) is cut at
    # epoch 1 because 0 is below the median of what trial 1 recorded there
    curves = [[1, 2, 3, 4], [0, 0, 0, 5], [2, 3, 4, 5]]
    assert se.asha_replay(curves, grace=1, eta=2) == (5, 4 + 1 + 4)
    assert se.asha_replay(curves, grace=4, eta=2) == (5, 12)  # no rung below max_t: every trial runs to the end
    assert se.asha_replay(curves[:2], grace=1, eta=2) == (4, 5)


def test_promote_replay_uses_the_schedulers_promotion_rule():
    import search_efficiency as se

    # rungs at epochs 1 and 2 (4 is max_t); one worker: trial 0 waits at epoch 1 until trial 1 arrives
    # (quota floor(2/2) = 1: trial 0 goes on, trial 1 is out), waits again at epoch 2; trial 2 beats it at
    # both rungs and runs to the end: 1 + 1 + 1 + 4 epochs instead of Ray's rule's 4 + 1 + 4
    curves = [[1, 2, 3, 4], [0, 0, 0, 5], [2, 3, 4, 5]]
    assert se.promote_replay(curves, grace=1, eta=2, workers=1) == (5, 7)
    assert se.promote_replay(curves, grace=4, eta=2, workers=2) == (5, 12)  # no rung: every trial runs to the end


def test_pruner_replay_asks_optunas_pruner_each_epoch():
    import optuna
    import search_efficiency as se

    # MedianPruner after 1 start-up trial: trial 1 (0 at epoch 1) is below trial 0's median (1) and stops
    # there; trial 2 leads every epoch and runs on. A pruner that never prunes spends every epoch
    curves = [[1, 2, 3, 4], [0, 0, 0, 5], [2, 3, 4, 5]]
    assert se.pruner_replay(curves, optuna.pruners.MedianPruner(n_startup_trials=1)) == (5, 4 + 1 + 4)
    assert se.pruner_replay(curves, optuna.pruners.NopPruner()) == (5, 12)
    table = se.pruner_rows([{"repeat": 7, "random_curves": {"0": curves[0], "1": curves[1], "2": curves[2]},
                             "random_trials": [{}, {}, {}]}])
    assert table.splitlines()[0] == "| Optuna pruner | r7 ratio, fraction |"
    assert len(table.splitlines()) == 2 + len(se.optuna_pruners(4))


def test_search_efficiency_set_reads_values_as_yaml_and_refuses_a_bare_key():
    import pytest
    import search_efficiency as se

    assert se.overrides_of(["search.multivariate=true", "search.n_startup_trials=8", "scheduler.type=asha"]) == {
        "search.multivariate": True, "search.n_startup_trials": 8, "scheduler.type": "asha"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        se.overrides_of(["search.group"])


def test_extend_random_union_numbers_the_added_draws_after_the_stored_ones():
    import search_efficiency as se

    first = {"best": 0.3, "epochs": 4, "full_budget": 4, "wall_seconds": 10.0, "best_config": {"lr": 1},
             "status_counts": {"completed": 2}, "trials": [{"trial": 1}, {"trial": 2}],
             "curves": {"1": [0.1, 0.2], "2": [0.2, 0.3]}, "reused_from": "old.json"}
    more = {"best": 0.5, "epochs": 3, "full_budget": 4, "wall_seconds": 5.0, "best_config": {"lr": 2},
            "status_counts": {"completed": 1, "error": 1}, "trials": [{"trial": 0}, {"trial": 1}],  # counted from 0
            "curves": {"0": [0.5, 0.4], "1": [0.1]}}
    u = se.union(first, more, 1007)
    assert [t["trial"] for t in u["trials"]] == [1, 2, 3, 4]  # first counted from 1 (an older JSON)
    assert u["curves"]["3"] == [0.5, 0.4] and sorted(u["curves"], key=int) == ["1", "2", "3", "4"]
    assert (u["best"], u["best_config"], u["epochs"], u["full_budget"]) == (0.5, {"lr": 2}, 7, 8)
    assert u["status_counts"] == {"completed": 3, "error": 1} and u["wall_seconds"] == 15.0
    assert u["reused_from"] == "old.json + 2 draws seeded 1007"
    # a stored search without curves (an older JSON): the added draws' curves are kept, the replay skips the row
    partial = se.union({**first, "curves": {}}, more, 1007)
    assert sorted(partial["curves"]) == ["3", "4"]
    row = {"repeat": 0, "random_curves": partial["curves"], "random_trials": partial["trials"]}
    assert se.replay_rows([row]) == ""
    assert se.replay_rows([{**row, "random_curves": u["curves"]}]).count("\n") == 31  # header, rule, 30 schedules


def test_reuse_random_refuses_a_random_arm_of_another_size(tmp_path, capsys):
    import json

    import search_efficiency as se

    stored = tmp_path / "se.json"
    stored.write_text(json.dumps({"rows": [{"repeat": 0, "random_best": 0.1, "random_epochs": 4, "full_budget": 4,
                                            "random_wall_seconds": 1, "random_best_config": {},
                                            "random_status_counts": {}, "random_trials": [{"trial": 0}]}]}))
    out = tmp_path / "out"
    assert se.main(["--smoke-test", "--samples", "4", "--reuse-random", str(stored), "--output", str(out)]) == 2
    assert "repeat 0 has 1 trials, not --samples 4" in capsys.readouterr().err
    assert not out.exists()  # refused before Ray starts or anything is written
    # --extend-random can add draws but not take any away
    bigger = tmp_path / "big.json"
    rows = json.loads(stored.read_text())["rows"]
    bigger.write_text(json.dumps({"rows": [{**rows[0], "random_trials": [{"trial": 0}, {"trial": 1}]}]}))
    assert se.main(["--smoke-test", "--samples", "1", "--extend-random", str(bigger), "--output", str(out)]) == 2
    assert "--extend-random" in capsys.readouterr().err and not out.exists()


def test_search_efficiency_names_the_asha_arms_scheduler_and_each_repeats_command():
    import argparse

    import search_efficiency as se

    over = {"scheduler.grace_period": 1, "scheduler.reduction_factor": 4, "search.multivariate": True}
    assert se.scheduler_of_spec(over) == "asha_promote, grace 1, reduction 4, rungs at epochs 1, 4"
    assert se.scheduler_of_spec() == "asha_promote, grace 2, reduction 3, rungs at epochs 2, 6"  # bpr.yaml's
    assert se.scheduler_of_spec({}, smoke_test=True).endswith("rungs at epochs -")  # 3 epochs: no rung fits
    args = argparse.Namespace(smoke_test=False, repeats=3, first_repeat=2, reuse_random=None,
                              extend_random="old.json", samples=32, set=["scheduler.grace_period=1"], tag="_x",
                              overrides={"scheduler.grace_period": 1}, data=se.BEAUTY)
    assert se.command_of(args, 3) == ("python benchmarks/search_efficiency.py --repeats 1 --first-repeat 3 "
                                      "--extend-random old.json --samples 32 --set scheduler.grace_period=1 --tag _x")
    assert se.command_of(args, 0).startswith("python benchmarks/search_efficiency.py --repeats 1 --extend-random")
    row = {"repeat": 0, "asha_best": 0.2, "random_best": 0.1, "ratio": 2.0, "asha_epochs": 2, "random_epochs": 8,
           "epoch_fraction": 0.25, "asha_wall_seconds": 1, "random_wall_seconds": 2, "ratio_met": True,
           "epoch_fraction_met": True, "asha_best_config": {}, "random_best_config": {}, "random_trials": []}
    rows = [{**row, "command": "cmd-a"}, {**row, "repeat": 1}]  # an older row has no command: not listed
    md = se.markdown(se.summarize(rows, args, (0.0, 0.0, 0.0)))
    assert "ASHA+TPE arm's scheduler: asha_promote, grace 1, reduction 3, rungs at epochs 1, 3 (bpr.yaml with scheduler.grace_period=1)" in md
    assert "- repeat 0: `cmd-a`" in md and "- repeat 1: `" not in md


def test_search_efficiency_merges_repeats_whichever_run_finishes_first(tmp_path):
    """Two runs of different repeats into one JSON (run side by side): the later writer keeps the earlier's row."""
    import json

    import search_efficiency as se

    path = str(tmp_path / "se.json")
    assert se.merge_rows(path, [{"repeat": 3}]) == ([{"repeat": 3}], [])  # no file yet
    (tmp_path / "se.json").write_text(json.dumps({"rows": [{"repeat": 0}, {"repeat": 1}, {"repeat": 3, "old": 1}]}))
    rows, kept = se.merge_rows(path, [{"repeat": 2}])  # repeat 3 finished first: it is kept, after repeat 2
    assert [r["repeat"] for r in rows] == [0, 1, 2, 3] and kept == [0, 1, 3]
    rows, kept = se.merge_rows(path, [{"repeat": 3}])  # a rerun of repeat 3 replaces its row
    assert rows == [{"repeat": 0}, {"repeat": 1}, {"repeat": 3}] and kept == [0, 1]


def test_search_efficiency_ctrl_c_is_one_line_130_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import search_efficiency as se
    from tuner import cluster
    from tuner.pipeline import Interrupted

    def cut_short(args, repeats, both, reused, rows):  # repeat 0 done, Ctrl+C during repeat 1
        rows.append({"repeat": 0})
        raise Interrupted(str(tmp_path / "sweep"))

    monkeypatch.setattr(cluster, "start", lambda *a, **k: None)
    monkeypatch.setattr(se, "run_repeats", cut_short)
    out = tmp_path / "out"
    assert se.main(["--smoke-test", "--output", str(out)]) == 130
    err = capsys.readouterr().err
    assert err == "benchmarks/search_efficiency.py: interrupted; nothing written (repeats finished: 0)\n"
    assert not out.exists()


def test_stop_at_target_aims_each_asha_sweep_at_its_repeats_random_best(tmp_path, monkeypatch, capsys):
    """--stop-at-target: the ASHA + TPE sweep of repeat r gets search.stop_at = 0.98 x repeat r's stored
    random best (a hair above, so reaching it is a ratio >= 0.98 after rounding); the random arm is the
    stored one; the row, the command and the variants table say so. Without --reuse-random: one line, 2."""
    import json

    import search_efficiency as se
    from tuner import cluster

    out = tmp_path / "out"
    assert se.main(["--stop-at-target", "--output", str(out), "--data", __file__]) == 2
    assert "--stop-at-target needs --reuse-random" in capsys.readouterr().err and not out.exists()

    stored = tmp_path / "se.json"
    arm = {"random_epochs": 8, "full_budget": 8, "random_wall_seconds": 1, "random_best_config": {},
           "random_status_counts": {}, "random_trials": [{"trial": 0}, {"trial": 1}]}
    stored.write_text(json.dumps({"rows": [{**arm, "repeat": 0, "random_best": 0.04},
                                           {**arm, "repeat": 1, "random_best": 0.05}]}))
    seen = []

    def fake_sweep(args, tmp, overrides):
        seen.append(overrides)
        return {"best": 0.98 * 0.05, "epochs": 3, "full_budget": 8, "wall_seconds": 1.0, "best_config": {},
                "status_counts": {}, "trials": [{"trial": 0}], "curves": {}}

    monkeypatch.setattr(cluster, "start", lambda *a, **k: None)
    monkeypatch.setattr(se, "run_sweep", fake_sweep)
    args = ["--repeats", "1", "--first-repeat", "1", "--reuse-random", str(stored), "--stop-at-target",
            "--data", __file__, "--set", "search.epoch_budget=2", "--output", str(out)]
    assert se.main(args) == 0
    assert len(seen) == 1 and seen[0]["search.seed"] == 1 and seen[0]["search.epoch_budget"] == 2
    assert seen[0]["search.stop_at"] == pytest.approx(0.98 * 0.05) and seen[0]["search.stop_at"] > 0.98 * 0.05
    rec = json.loads((out / "search_efficiency.json").read_text())
    row = rec["rows"][0]
    assert rec["stop_at_target"] is True and row["asha_stop_at"] == seen[0]["search.stop_at"]
    assert "--stop-at-target" in row["command"] and row["ratio"] == pytest.approx(0.98)
    assert "epoch_budget=2, stopped at 0.98 x random's best" in se.variants_table(str(out))
    assert se.main([*args[:3], "0", *args[4:]]) == 0  # --first-repeat 0 merges too: repeats in any order
    assert [r["repeat"] for r in json.loads((out / "search_efficiency.json").read_text())["rows"]] == [0, 1]


def test_every_benchmark_ends_on_ctrl_c_in_one_line_exit_130(tmp_path, capsys):
    import glob

    import entry
    from tuner.pipeline import Interrupted

    def ctrl_c():
        raise KeyboardInterrupt

    def cut_sweep():
        raise Interrupted(str(tmp_path))

    assert entry.run(ctrl_c, "benchmarks/x.py") == 130
    assert capsys.readouterr().err == "benchmarks/x.py: interrupted\n"
    assert entry.run(cut_sweep, "benchmarks/x.py") == 130
    assert capsys.readouterr().err == f"benchmarks/x.py: interrupted; the sweep's state is in {tmp_path}\n"
    assert entry.run(lambda: 0, "benchmarks/x.py") == 0
    scripts = [p for p in glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
               if 'if __name__ == "__main__":' in open(p).read()]
    assert len(scripts) >= 9
    for path in scripts:  # each entry point goes through entry.run
        assert f'entry.run(main, "benchmarks/{os.path.basename(path)}")' in open(path).read(), path


def test_search_efficiency_keeps_each_trials_config_without_the_knobs_its_condition_left_out(monkeypatch):
    import types

    import pandas as pd
    import search_efficiency as se
    from tuner import sweep

    table = pd.DataFrame([  # as sweep.run's table: num_negatives (when loss is bpr) is NaN for a CE trial
        {"trial": 0, "status": "completed", "epochs_run": 3, "best_val_ndcg_10": 0.02, "loss": "ce",
         "num_negatives": float("nan"), "dim": 16, "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 256},
        {"trial": 1, "status": "stopped_early", "epochs_run": 1, "best_val_ndcg_10": 0.01, "loss": "bpr",
         "num_negatives": 4.0, "dim": 64, "lr": 2e-3, "weight_decay": 1e-5, "batch_size": 512}])
    monkeypatch.setattr(sweep, "run", lambda spec, output, verbose: types.SimpleNamespace(table=table, best_config={}))
    monkeypatch.setattr(se, "curves", lambda res, metric: {})
    args = types.SimpleNamespace(smoke_test=True)
    trials = se.run_sweep(args, "unused", {})["trials"]
    assert trials[0] == {"trial": 0, "status": "completed", "epochs_run": 3, "best_val_ndcg_10": 0.02, "loss": "ce",
                         "dim": 16, "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 256}
    assert trials[1]["loss"] == "bpr" and trials[1]["num_negatives"] == 4.0


def test_promote_replay_with_brackets_judges_a_later_bracket_at_its_own_rung():
    import search_efficiency as se

    # 8 trials, 2 brackets: trials 1 and 5 are bracket 1 (tuner.schedulers.bracket_plan), compared first at
    # epoch 2. Trial 1 starts slowest (0 at epochs 1-3) and ends best (9): one bracket cuts it at epoch 1,
    # two keep it, as it beats trial 5, its bracket's only rival, at epoch 2
    curves = [[1, 2, 3, 4]] * 8
    curves[1], curves[5] = [0, 0, 0, 9], [0, -1, -1, 1]
    best1, spent1 = se.promote_replay(curves, grace=1, eta=2, workers=1)
    best2, spent2 = se.promote_replay(curves, grace=1, eta=2, workers=1, brackets=2)
    assert best1 == 4 and best2 == 9 and spent2 > spent1


def test_search_efficiency_variants_lines_up_each_stored_result_repeat_by_repeat(tmp_path, capsys):
    """--variants: one row per result file, each repeat in its own column; a variant counts as meeting the
    targets only with both met in 5 repeats; smoke results are left out; no results is one line, exit 2."""
    import json

    import search_efficiency as se

    def row(r, ratio, frac):
        return {"repeat": r, "ratio": ratio, "epoch_fraction": frac, "ratio_met": ratio >= 0.98,
                "epoch_fraction_met": frac <= 0.35, "asha_trials": [{}] * 32, "random_trials": [{}] * 32,
                "full_budget": 640}

    def write(name, rows, smoke=False, overrides=None):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"smoke_test": smoke, "scheduler": "asha_promote, grace 1, reduction 4, rungs at epochs 1, 4",
             "asha_overrides": overrides or {}, "rows": rows}))

    assert se.main(["--variants", "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    write("search_efficiency_a", [row(r, 1.0, 0.2) for r in range(4)] + [row(4, 0.97, 0.2)],
          overrides={"scheduler.grace_period": 1, "search.multivariate": True, "scheduler.brackets": 2})
    write("search_efficiency_b", [row(r, 1.01, 0.3) for r in (0, 2)])
    write("search_efficiency_smoke", [row(0, 0.5, 0.9)], smoke=True)
    assert se.main(["--variants", "--output", str(tmp_path)]) == 0
    text = (tmp_path / "search_efficiency_variants.md").read_text()
    assert text == capsys.readouterr().out
    lines = [line for line in text.splitlines() if line.startswith("| `")]
    assert lines[0] == ("| `search_efficiency_a` | 32/32 | asha_promote, grace 1, reduction 4 | multivariate=true, "
                        "brackets=2 | 1.000 (20%) | 1.000 (20%) | 1.000 (20%) | 1.000 (20%) | 0.970 (20%) "
                        "| 4 of 5 | 0.970 | 0.994 |")
    assert lines[1].startswith("| `search_efficiency_b` | 32/32 |") and "| 1.010 (30%) | - | 1.010 (30%) | - | - |" in lines[1]
    assert len(lines) == 2  # the smoke result is left out
    assert "Both targets met in each of 5 or more repeats: **none** of the variants stored." in text
    write("search_efficiency_a", [row(r, 1.0, 0.2) for r in range(5)])
    assert "Both targets met in each of 5 or more repeats: `search_efficiency_a`." in se.variants_table(str(tmp_path))
    budgeted = [row(r, 1.0, 0.1) for r in range(3)]  # an epoch budget: each repeat ran its own number of trials
    for r, n in zip(budgeted, (20, 11, 23)):
        r["asha_trials"] = [{}] * n
    write("search_efficiency_a", budgeted)
    assert "| `search_efficiency_a` | 11-23/32 |" in se.variants_table(str(tmp_path))
    (tmp_path / "search_efficiency_broken.json").write_text('{"rows": [{"repeat": 0}]}')  # no ratio: one line, exit 2
    assert se.main(["--variants", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "search_efficiency_broken.json: not a search_efficiency.py result (KeyError" in err


def test_the_stored_variants_table_is_the_one_the_stored_results_give():
    """benchmarks/results/search_efficiency_variants.md is regenerated after every result added: the table
    and the files it summarises say the same numbers."""
    import search_efficiency as se

    results = os.path.join(ROOT, "benchmarks", "results")
    with open(os.path.join(results, "search_efficiency_variants.md")) as fh:
        assert fh.read() == se.variants_table(results)
