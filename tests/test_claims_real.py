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


def test_one_claim_on_two_data_sets_keeps_a_row_each(tmp_path):
    doc = tmp_path / "claims.md"
    beauty, lastfm = fake("003_a", 0.02), {**fake("003_a", 0.04), "dataset": "LastFM"}
    claims_real.write_doc(str(doc), [beauty, lastfm], "1.0")
    claims_real.write_doc(str(doc), [{**fake("003_a", 0.07), "dataset": "LastFM"}], "1.0")  # LastFM again
    text = doc.read_text()
    assert text.count("| 003_a | UCI |") == 1 and text.count("| 003_a | LastFM |") == 1
    assert "| +0.0200 [" in text and "| +0.0700 [" in text and "| +0.0400 [" not in text
    assert text.count("### 003_a on UCI") == 1 and text.count("### 003_a on LastFM") == 1


def test_sequence_claims_get_lastfm_others_do_not(tmp_path):
    beauty, lastfm = tmp_path / "Beauty.txt", tmp_path / "LastFM.txt"
    files = {"beauty": str(beauty), "lastfm": str(lastfm)}

    def claim(model):
        return NS(a=NS(spec=NS(model=model)))

    assert claims_real.datasets_of(claim("sasrec"), None, files, "attrs") == []  # neither file exists
    beauty.write_text("1 1 2 3\n")
    lastfm.write_text("1 1 2 3\n")
    assert [d for d, _ in claims_real.datasets_of(claim("sasrec"), None, files, "attrs")] == ["Amazon Beauty", "LastFM"]
    assert [d for d, _ in claims_real.datasets_of(claim("two_tower"), None, files, "attrs")] == ["Amazon Beauty"]
    (label, over), = claims_real.datasets_of(claim("multimodal"), None, files, "attrs")
    assert over["data.item_attributes"] == "attrs" and over["data.path"] == str(beauty)
    assert claims_real.slug("../shared/data/s3rec/LastFM.txt") == "LastFM"


def test_a_stopped_run_keeps_the_claims_it_finished(tmp_path, monkeypatch):
    """run_all hands the results so far to on_result after each claim: the second claim failing leaves
    the first one's row written."""
    calls = []

    def run_claim(claim, name, label, over, **kw):
        if name == "003_b":
            raise KeyboardInterrupt  # the run stopped halfway
        return fake(name, 0.02)

    monkeypatch.setattr(claims_real, "run_claim", run_claim)
    monkeypatch.setattr(claims_real, "details", lambda r: "")
    monkeypatch.setattr(claims_real, "datasets_of", lambda *a: [("UCI", {})])
    import tuner.compare

    monkeypatch.setattr(tuner.compare, "load_claim", lambda f, smoke: NS(a=NS(spec=NS(model="sasrec"))))
    doc = tmp_path / "claims.md"

    def write(results):
        calls.append(len(results))
        claims_real.write_doc(str(doc), results, "1.0")

    try:
        claims_real.run_all(["003_a.yaml", "003_b.yaml"], smoke=False, output=str(tmp_path), data={}, attrs="",
                            on_result=write)
    except KeyboardInterrupt:
        pass
    assert calls == [1] and "| 003_a | UCI |" in doc.read_text()


def test_each_data_option_selects_its_data_set(tmp_path, monkeypatch):
    """--data beauty once matched no label ("Amazon Beauty" does not start with "beauty") and the
    claim was skipped; each option must name one data set of BUDGETS."""
    assert set(claims_real.DATA_OPTIONS.values()) == set(claims_real.BUDGETS)
    ran = []
    monkeypatch.setattr(claims_real, "run_claim", lambda c, name, label, over, **kw: ran.append(label) or fake(name, 0))
    monkeypatch.setattr(claims_real, "details", lambda r: "")
    monkeypatch.setattr(claims_real, "datasets_of", lambda *a: [(lab, {}) for lab in claims_real.BUDGETS])
    import tuner.compare

    monkeypatch.setattr(tuner.compare, "load_claim", lambda f, smoke: NS(a=NS(spec=NS(model="sasrec"))))
    for option, label in claims_real.DATA_OPTIONS.items():
        ran.clear()
        claims_real.run_all(["003_a.yaml"], smoke=False, output=str(tmp_path), data={}, attrs="", only=(option,))
        assert ran == [label]


def test_gpu_share_reaches_every_run_and_the_doc(tmp_path, monkeypatch):
    """claims.py --real --gpu 0.1: each run's spec asks for 0.1 GPU and 10 runs go at once (lr search and
    compare read search.concurrency); the row names the GPU beside the wall time it explains."""
    from tuner import compare

    path = os.path.join(ROOT, "search_spaces", "claims", "003_popularity_negatives.yaml")
    seen = []
    monkeypatch.setattr(claims_real, "run_claim", lambda c, name, label, over, **kw: seen.append(over) or fake(name, 0))
    monkeypatch.setattr(claims_real, "details", lambda r: "")
    claims_real.run_all([path], smoke=False, output=str(tmp_path), data={"beauty": path}, attrs="", gpu=0.1)
    assert seen and all(o["resources.gpu"] == 0.1 and o["search.concurrency"] == 10 for o in seen)
    claim = compare.load_claim(path, smoke=False)
    spec = claims_real.moved(claim.a, seen[0], smoke=False).spec
    assert spec.resources.gpu == 0.1 and spec.search.concurrency == 10
    seen.clear()
    claims_real.run_all([path], smoke=False, output=str(tmp_path), data={"beauty": path}, attrs="")
    assert seen and all("resources.gpu" not in o for o in seen)  # the default stays on the spec's own resources

    doc = tmp_path / "claims.md"
    claims_real.write_doc(str(doc), [{**fake("003_g", 0.01), "hardware": "NVIDIA H200, 0.1 GPU per run, 16 CPU cores"},
                                     {**fake("003_c", 0.01), "hardware": "2 CPU cores"}], "1.0")
    rows = {ln.split("|")[1].strip(): ln for ln in doc.read_text().splitlines() if ln.startswith("| 003_")}
    assert rows["003_g"].rstrip(" |").endswith("on NVIDIA H200, 0.1 GPU per run, 16 CPU cores")
    assert "GPU" not in rows["003_c"]
