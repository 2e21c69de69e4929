"""benchmarks/claims_real.py: the real-data table goes on top of docs/claims.md, replaces the rows of the
claims run again, keeps the others and the synthetic sections below. No Ray."""

import os
import subprocess
import sys
from types import SimpleNamespace as NS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import claims_real  # noqa: E402
from analysis.stats import Row  # noqa: E402


def fake(name, diff):
    row = Row("test_macro_f1", "max", 5, 0.9, 0.9 + diff, diff, diff - 0.01, diff + 0.01, 1.0, "better",
              p_t=0.01, p_wilcoxon=0.06, p_sign=0.06)
    lr = {"lr": 0.003, "seconds": 40.0, "trials": 6, "epochs": 30, "best_val": 0.9, "metric": "val_macro_f1"}
    claim = NS(claim="a claim", seeds=5, patience=10, a=NS(name="mse"), b=NS(name="sl1"))
    return {"name": name, "dataset": "UCI", "data": "uci-mfeat", "claim": claim, "lrs": {"A": lr, "B": lr},
            "cap": 60, "wall": 300.0,
            "result": NS(rows=[row], markdown="| metric | N |\n|---|---:|\n| test_macro_f1 (max) | 5 |")}


def test_real_section_on_top_and_merged(tmp_path):
    doc = tmp_path / "claims.md"
    doc.write_text("# The seeds' claims, measured\n\nsynthetic\n")
    claims_real.write_doc(str(doc), [fake("004_a", 0.02), fake("004_b", 0.03)], "1.0, 2.0, 3.0")
    claims_real.write_doc(str(doc), [fake("004_b", 0.05)], "1.0, 2.0, 3.0")
    text = doc.read_text()
    assert text.startswith(claims_real.BEGIN) and text.count(claims_real.BEGIN) == 1
    assert text.index(claims_real.END) < text.index("# The seeds' claims, measured")
    assert text.count("| 004_a |") == 1 and text.count("| 004_b |") == 1 and "| +0.0500 [" in text and "| +0.0300 [" not in text
    assert text.count("### 004_a on UCI") == 1 and text.count("### 004_b on UCI") == 1
    summary = text.split("\n### ", 1)[0]  # a claim's own table stays in its section, out of the summary
    assert "| metric | N |" not in summary and "| test_macro_f1 (max) |" not in summary


def test_unknown_claim_is_one_line_exit_2():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "claims.py"), "--real", "999_nope"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "999_nope" in p.stderr
