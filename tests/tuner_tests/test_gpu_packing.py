"""GPUs without a GPU: Ray schedules logical GPUs, so a node declared with 2 on this CPU machine
checks the packing a real GPU machine gets (resources.gpu 0.5 -> 4 trials at once, 0.25 -> 8), the
CUDA_VISIBLE_DEVICES each trial is given, and the trainable's fall-back to the CPU."""

import json
import os
import re

import pytest
from helpers import run_script

pytestmark = pytest.mark.ray
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, where the script lies


def test_fractional_gpus_pack_trials_and_fall_back_to_cpu():
    code, out, err = run_script([os.path.join(HERE, "gpu_packing.py"), "0.5", "0.25"], timeout=420)
    assert code == 0, err[-3000:]
    got = {r["fraction"]: r for r in map(json.loads, [ln for ln in out.splitlines() if ln.startswith("{")])}
    for fraction, at_once in ((0.5, 4), (0.25, 8)):
        r = got[fraction]
        assert r["trials"] == 8 and r["statuses"] == ["completed"], r
        assert r["most_at_once"] == at_once, r  # 2 logical GPUs / fraction; Ray never exceeds it
        ids = [re.fullmatch(r"cpu \(CUDA_VISIBLE_DEVICES=(\d)\)", d) for d in r["devices"]]
        assert all(ids) and len(ids) == 8, r["devices"]  # torch sees no CUDA here: CPU, with Ray's GPU id
        assert {m.group(1) for m in ids} == {"0", "1"}, r["devices"]
        # where each trial trained, kept past Ray's result files: a trials.csv column and an MLflow tag
        assert r["csv_devices"] == sorted(r["devices"]) == r["mlflow_devices"], r
