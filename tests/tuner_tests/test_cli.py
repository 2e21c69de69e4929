"""The bad-input table: every user mistake -> one line naming file and key/line, exit 2, nothing written."""

import glob
import os

import pytest
import yaml

from tuner.cli import main

GOOD = {
    "name": "t",
    "model": "bpr_mf",
    "metric": {"name": "val_ndcg_10", "mode": "max"},
    "fixed": {"epochs": 2},
    "space": {"loss": {"type": "categorical", "choices": ["bpr", "ce"]},
              "num_negatives": {"type": "int", "low": 1, "high": 4, "when": {"loss": "bpr"}},
              "lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-1, "log": True}},
    "search": {"samples": 2, "concurrency": 1},
}


def with_(path, value):
    """A copy of GOOD with the dotted `path` set to `value` (None deletes it)."""
    body = yaml.safe_load(yaml.safe_dump(GOOD))
    node = body
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if value is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return body


def file_data(text, fmt="auto", name="data.txt"):
    return {"_file": (name, text), "data": {"source": "file", "path": name, "format": fmt}}


# (case id, spec body or raw YAML text, text expected in the error besides the file name)
CASES = [
    ("malformed-yaml", "name: t\nmodel: [bpr_mf\n", "invalid YAML"),
    ("not-a-mapping", "- 1\n- 2\n", "mapping"),
    ("unknown-top-key", with_("epochz", 3), "epochz"),
    ("unknown-metric-key", with_("metric.goal", "max"), "metric.goal"),
    ("unknown-data-key", with_("data.pth", "x"), "data.pth"),
    ("unknown-synthetic-key", with_("data.synthetic.users", 5), "data.synthetic.users"),
    ("unknown-eval-key", with_("eval.k", [10]), "eval.k"),
    ("unknown-search-key", with_("search.trials", 3), "search.trials"),
    ("unknown-scheduler-key", with_("scheduler.grace", 1), "scheduler.grace"),
    ("unknown-resources-key", with_("resources.gpus", 1), "resources.gpus"),
    ("unknown-tracking-key", with_("tracking.url", "x"), "tracking.url"),
    ("unknown-run-key", with_("run.retries", 1), "run.retries"),
    ("unknown-space-entry-key", with_("space.lr.lo", 1), "space.lr.lo"),
    ("unknown-model", with_("model", "bpr_mff"), "bpr_mf"),
    ("unknown-knob-fixed", with_("fixed.dimm", 3), "fixed.dimm"),
    ("unknown-knob-space", with_("space.dimm", {"type": "int", "low": 1, "high": 2}), "space.dimm"),
    ("unknown-loss-lists-valid", with_("space.loss.choices", ["bpr", "warp"]), "valid: bpr"),
    ("wrong-type-int", with_("search.samples", "many"), "search.samples"),
    ("wrong-type-bool", with_("space.lr.log", "yes"), "space.lr.log"),
    ("wrong-type-float", with_("resources.cpu", [1]), "resources.cpu"),
    ("low-gt-high", with_("space.lr.low", 1.0), "space.lr.low"),
    ("log-with-zero", with_("space.lr.low", 0.0), "log"),
    ("empty-choices", with_("space.loss.choices", []), "space.loss.choices"),
    ("when-unknown-knob", with_("space.num_negatives.when", {"loss_fn": "bpr"}), "space.num_negatives.when"),
    ("when-never-sampled", with_("space.num_negatives.when", {"loss": "hinge"}), "space.num_negatives.when"),
    ("metric-not-reported", with_("metric.name", "val_auc"), "metric.name"),
    ("negative-cpu", with_("resources.cpu", -1), "resources.cpu"),
    ("negative-gpu", with_("resources.gpu", -0.5), "resources.gpu"),
    ("zero-samples", with_("search.samples", 0), "search.samples"),
    ("grace-beyond-epochs", with_("scheduler.grace_period", 5), "scheduler.grace_period"),
    ("missing-data-file", {"data": {"source": "file", "path": "nope.txt"}}, "data.path"),
    ("data-path-is-a-folder", {"data": {"source": "file", "path": "."}}, "data.path"),
    ("malformed-data-line", file_data("1 10\n1 11\n1 12\n2 10 x\n", "pairs"), "data.txt:4"),
    ("empty-dataset", file_data(""), "empty"),
    ("user-with-one-interaction", file_data("1 10 11 12\n2 10\n", "sequences"), "data.txt:2"),
    ("csv-missing-item-column", file_data("user,thing\n1,2\n", "csv", "d.csv"), "item"),
    ("not-utf8-data", {"_file": ("bin.txt", b"\xff\xfe\x00\x01"), "data": {"source": "file", "path": "bin.txt"}},
     "bin.txt"),
]


@pytest.mark.parametrize("case, body, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_table(tmp_path, capsys, monkeypatch, case, body, needle):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.yaml"
    if isinstance(body, str):
        spec.write_text(body)
    else:
        body = dict(body)
        extra = body.pop("_file", None)
        if extra:
            name, content = extra
            (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        full = yaml.safe_load(yaml.safe_dump(GOOD)) if "model" not in body else {}
        full.update(body)
        spec.write_text(yaml.safe_dump(full, sort_keys=False))
    before = set(os.listdir(tmp_path))
    code = main(["run", str(spec), "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert needle in err, err
    assert ("spec.yaml" in err) or any(n in err for n in ("data.txt", "d.csv", "bin.txt")), err
    assert set(os.listdir(tmp_path)) == before, "files were written"


@pytest.mark.parametrize("argv, needle", [
    (["run", "missing.yaml"], "missing.yaml"),
    (["run", "spec.yaml", "--set", "search.samples"], "--set"),
    (["run", "spec.yaml", "--set", "search.samples=[1"], "--set"),
    (["run", "spec.yaml", "--set", "search.samples=-3"], "search.samples"),
    (["run", "spec.yaml", "--samples", "0"], "search.samples"),
    (["run", "spec.yaml", "--tracking-uri", "http://127.0.0.1:9"], "cannot reach MLflow"),
    (["resume", "no-such-sweep"], "no-such-sweep"),
    (["resume", "."], "not a tuner sweep folder"),
])
def test_bad_command_lines(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(GOOD))
    before = set(os.listdir(tmp_path))
    code = main(argv + ["--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert set(os.listdir(tmp_path)) == before


def test_tokens_in_tracking_uris_are_never_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(GOOD))
    code = main(["run", "spec.yaml", "--tracking-uri", "http://alice:s3cret-token@127.0.0.1:9", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "s3cret-token" not in err and "***@" in err


def test_validate_prints_a_summary(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(GOOD, sort_keys=False))
    assert main(["validate", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "loss, num_negatives, lr" in out


def test_show_lists_every_knob_with_its_source(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(GOOD, sort_keys=False))
    assert main(["show", str(spec)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[6:] if line.strip()}
    assert rows["lr"] == "searched" and rows["epochs"] == "fixed" and rows["dim"] == "default"
    assert "when loss in ['bpr']" in out and "float [0.001, 0.1] log" in out


CLAIMS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "search_spaces", "claims", "*.yaml")))


@pytest.mark.parametrize("claim", CLAIMS, ids=os.path.basename)
def test_validate_accepts_the_shipped_claim_files(claim, capsys):
    assert main(["validate", claim]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{claim}: ok - claim") and len(out) == 3, out
    assert out[1].startswith("  A ") and out[2].startswith("  B ") and all(": ok - model" in ln for ln in out[1:])


@pytest.mark.parametrize("claim", CLAIMS, ids=os.path.basename)
def test_show_prints_each_side_of_a_claim(claim, capsys):
    from tuner import compare

    assert main(["show", claim]) == 0
    out = capsys.readouterr().out
    c = compare.load_claim(claim)
    assert f"## A: {c.a.name}" in out and f"## B: {c.b.name}" in out, out
    for side in (c.a, c.b):  # every knob the side fixes is listed as fixed
        block = out.split(f": {side.name}\n", 1)[1]
        for knob in side.spec.fixed:
            assert any(ln.split()[:2] == [knob, "fixed"] for ln in block.splitlines() if ln.strip()), (knob, block)


def test_set_is_refused_for_claim_files(capsys):
    assert main(["validate", CLAIMS[0], "--set", "fixed.dim=8"]) == 2
    assert "claim file" in capsys.readouterr().err
