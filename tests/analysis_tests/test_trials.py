"""The trials table built from Ray's results."""

from types import SimpleNamespace

import pandas as pd

from analysis.trials import trials_table


def result(tid, epochs, values, config):
    hist = pd.DataFrame({"epoch": list(range(1, epochs + 1)), "val": values})
    return SimpleNamespace(metrics={"trial_id": tid, "epoch": epochs, "val": values[-1]}, metrics_dataframe=hist,
                           config=config, error=None, path=f"/x/train_{tid}_0")


def test_a_result_without_config_takes_its_trials_config():
    """Seen on `tuner resume` of the Beauty sweep: a restored trial ended before it reported again has
    a Result whose config (read from its last result) is None; the table crashed and the interrupted
    sweep printed an internal error instead of its trials."""
    rs = [result("a", 3, [0.1, 0.3, 0.2], {"epochs": 3, "lr": 0.01}),
          result("b", 2, [0.2, 0.25], None)]
    t = trials_table(rs, "val", "max", lambda c: int(c.get("epochs", 3)), ("lr",), {"a": 0, "b": 1},
                     configs={"b": {"epochs": 4, "lr": 0.02}})
    assert list(t["trial_id"]) == ["a", "b"] and list(t["lr"]) == [0.01, 0.02]
    assert list(t["status"]) == ["completed", "stopped_early"]  # b: 2 of its own 4 planned epochs
    assert list(t["best_val"]) == [0.3, 0.25]
