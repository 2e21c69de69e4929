"""Issue 18, bad input: every input gets exit 0, or ONE line on stderr (exit 2, <= 300 chars) that names
the file and key or line, and nothing is written. Each case runs `tuner.cli.main` in-process.

Spec cases use `tuner validate` (no Ray, no MLflow); data cases and a few option cases use `tuner run`,
whose error paths all return before Ray or MLflow is touched (a guard below fails the case otherwise).
"""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml

from tuner.cli import main

GOOD = {
    "name": "t",
    "model": "bpr_mf",
    "metric": {"name": "val_ndcg_10", "mode": "max"},
    "data": {"synthetic": {"n_users": 50, "n_items": 30}},
    "eval": {"ks": [10]},
    "fixed": {"epochs": 2},
    "space": {"loss": {"type": "categorical", "choices": ["bpr", "ce"]},
              "num_negatives": {"type": "int", "low": 1, "high": 4, "when": {"loss": "bpr"}},
              "lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-1, "log": True}},
    "search": {"samples": 2, "concurrency": 1, "seed": 0},
    "scheduler": {"type": "asha", "grace_period": 1},
    "resources": {"cpu": 1, "gpu": 0},
    "tracking": {"experiment": "t"},
    "run": {"max_failures": 0},
}
GOOD_TEXT = yaml.safe_dump(GOOD, sort_keys=False)
BIG = 10 * 1024 * 1024  # the tester's 10 MB line / field


def mut(path: str, value=None, *, drop: bool = False) -> str:
    """GOOD as YAML text with dotted `path` set to `value` (or dropped)."""
    body = yaml.safe_load(GOOD_TEXT)
    node = body
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if drop:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return yaml.safe_dump(body, sort_keys=False, width=1 << 30)


def nested(depth: int) -> str:
    return "model: bpr_mf\nfixed: " + "[" * depth + "]" * depth + "\n"


LAUGHS = "model: bpr_mf\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

# (id, spec file content (str or bytes), what the error must name besides the file)
SPEC = [
    # --- the file itself: bytes, encoding, size, YAML syntax
    ("empty-file", "", "mapping"),
    ("only-a-comment", "# nothing here\n", "mapping"),
    ("top-level-list", "- model\n- bpr_mf\n", "mapping"),
    ("top-level-scalar", "bpr_mf\n", "mapping"),
    ("malformed-flow", "model: [bpr_mf\n", "invalid YAML"),
    ("tab-indent", "model: bpr_mf\nsearch:\n\tsamples: 2\n", ":3"),
    ("non-utf8-byte", b"name: t\nmodel: bpr_mf\n\xff\xfe: 1\n", ":3"),
    ("latin1-accent", b"model: bpr_mf\nname: caf\xe9\n", ":2"),
    ("utf16-file", "model: bpr_mf\n".encode("utf-16"), ":1"),
    ("nul-byte", b"model: bpr_mf\x00\n", "invalid YAML"),
    ("bell-control-char", "model: bpr_mf\nname: a\x07b\n", "invalid YAML"),
    ("over-1-mib", "model: bpr_mf\n" + ("#" * 1000 + "\n") * 1100, "KiB"),
    ("deep-nesting", nested(200), "nested"),
    ("huge-int-literal", "model: bpr_mf\nsearch: {samples: " + "9" * 5000 + "}\n", "invalid YAML"),
    ("impossible-date", "model: bpr_mf\nname: 2024-13-45\n", "invalid YAML"),
    ("python-tag", "model: !!python/object/apply:os.system [echo hi]\n", "invalid YAML"),
    ("unhashable-key", "model: bpr_mf\n? [a, b]\n: 1\n", "invalid YAML"),
    ("tag-int-empty", "model: bpr_mf\nsearch: {samples: !!int }\n", "invalid YAML"),
    ("tag-bool-word", "model: bpr_mf\ndiagnose: {enabled: !!bool maybe}\n", "invalid YAML"),
    ("tag-timestamp-word", "model: bpr_mf\nname: !!timestamp soon\n", "invalid YAML"),
    ("tag-set-of-a-list", "model: bpr_mf\nfixed: !!set [1]\n", "invalid YAML"),
    # --- duplicate keys: last-wins would silently change the experiment
    ("dup-top-key", "name: t\nmodel: bpr_mf\nname: u\n", ":3"),
    ("dup-nested-key", "model: bpr_mf\nsearch:\n  samples: 2\n  samples: 3\n", ":4"),
    ("dup-flow-key", "model: bpr_mf\nsearch: {samples: 2, samples: 3}\n", "duplicate key"),
    ("dup-space-knob", "model: bpr_mf\nspace:\n  lr: {type: float, low: 0.1, high: 1}\n"
                       "  lr: {type: float, low: 0.2, high: 1}\n", ":4"),
    ("dup-model", "model: bpr_mf\nmodel: sasrec\n", "duplicate key 'model'"),
    # --- anchors and aliases: a spec never needs them; a 400-byte one expands to 10^9 nodes
    ("billion-laughs", LAUGHS, "aliases"),
    ("alias-simple", "model: bpr_mf\nname: &n abc\nsearch: {study_name: *n}\n", ":2"),
    ("anchor-alone", "model: &m bpr_mf\n", "anchors"),
    ("merge-key-alias", "model: bpr_mf\nx: &x {a: 1}\nsearch:\n  <<: *x\n", "aliases"),
    # --- unknown keys, in every section
    ("unknown-top-key", mut("epochz", 3), "epochz"),
    *[(f"unknown-key-{sec.replace('.', '-')}", mut(f"{sec}.bogus", 1), f"{sec}.bogus")
      for sec in ("metric", "data", "data.synthetic", "eval", "search", "scheduler", "resources",
                  "tracking", "run", "diagnose")],
    ("unknown-space-entry-key", mut("space.lr.lo", 1), "space.lr.lo"),
    ("unknown-knob-fixed", mut("fixed.dimm", 3), "fixed.dimm"),
    ("unknown-knob-space", mut("space.dimm", {"type": "int", "low": 1, "high": 2}), "space.dimm"),
    ("huge-unknown-key", mut("k" * 100_000, 1), "unknown key"),
    # --- model
    ("unknown-model", mut("model", "bpr_mff"), "model"),
    ("model-list", mut("model", ["bpr_mf"]), "model"),
    ("model-null", "model:\n", "model"),
    ("missing-model", mut("model", drop=True), "model"),
    ("model-100k-chars", mut("model", "m" * 100_000), "model"),
    # --- name
    ("name-65-chars", mut("name", "n" * 65), "name"),
    ("name-300-chars", mut("name", "n" * 300), "name"),
    ("name-slash", mut("name", "a/b"), "name"),
    ("name-dotdot", mut("name", ".."), "name"),
    ("name-space", mut("name", "a b"), "name"),
    ("name-empty", mut("name", ""), "name"),
    ("name-int", mut("name", 5), "name"),
    ("name-list", mut("name", ["a"]), "name"),
    # --- search
    ("samples-zero", mut("search.samples", 0), "search.samples"),
    ("samples-negative", mut("search.samples", -1), "search.samples"),
    ("samples-1e23-string", "model: bpr_mf\nsearch: {samples: 1e23}\n", "search.samples"),
    ("samples-1.0e23", "model: bpr_mf\nsearch: {samples: 1.0e23}\n", "search.samples"),
    ("samples-over-cap", mut("search.samples", 100_001), "search.samples"),
    ("samples-word", mut("search.samples", "many"), "search.samples"),
    ("samples-bool", mut("search.samples", True), "search.samples"),
    ("samples-list", mut("search.samples", [1]), "search.samples"),
    ("samples-inf", "model: bpr_mf\nsearch: {samples: .inf}\n", "search.samples"),
    ("samples-nan", "model: bpr_mf\nsearch: {samples: .nan}\n", "search.samples"),
    ("samples-fraction", mut("search.samples", 1.5), "search.samples"),
    ("concurrency-zero", mut("search.concurrency", 0), "search.concurrency"),
    ("concurrency-huge", mut("search.concurrency", 10**6), "search.concurrency"),
    ("seed-negative", mut("search.seed", -1), "search.seed"),
    ("seed-1.0e23", "model: bpr_mf\nsearch: {seed: 1.0e23}\n", "search.seed"),
    ("seed-2-pow-32", mut("search.seed", 2**32), "search.seed"),
    ("algo-grid", mut("search.algo", "grid"), "search.algo"),
    ("tpe-option-with-random", mut("search", {"algo": "random", "multivariate": True}), "search.multivariate"),
    ("tpe-group-alone", mut("search", {"group": True}), "search.group"),
    ("tpe-startup-negative", mut("search.n_startup_trials", -1), "search.n_startup_trials"),
    ("tpe-liar-string", mut("search.constant_liar", "yes"), "search.constant_liar"),
    ("study-name-300", mut("search.study_name", "s" * 300), "search.study_name"),
    ("study-name-int", mut("search.study_name", 7), "search.study_name"),
    # --- data
    ("synthetic-users-1e9", mut("data.synthetic.n_users", 10**9), "data.synthetic.n_users"),
    ("synthetic-items-1e9", mut("data.synthetic.n_items", 1_000_000_000), "data.synthetic.n_items"),
    ("synthetic-product", mut("data.synthetic", {"n_users": 1_000_000, "n_items": 1000}), "data.synthetic.n_items"),
    ("synthetic-mean-length-huge", mut("data.synthetic.mean_length", 1e6), "data.synthetic.mean_length"),
    ("synthetic-seed-negative", mut("data.synthetic.seed", -5), "data.synthetic.seed"),
    ("synthetic-users-too-few", mut("data.synthetic.n_users", 5), "data.synthetic.n_users"),
    ("synthetic-items-string", mut("data.synthetic.n_items", "lots"), "data.synthetic.n_items"),
    ("synthetic-not-mapping", mut("data.synthetic", [1, 2]), "data.synthetic"),
    ("data-source-s3", mut("data.source", "s3"), "data.source"),
    ("data-format-parquet", mut("data.format", "parquet"), "data.format"),
    ("data-path-without-file-source", mut("data.path", "x.txt"), "data.path"),
    ("data-file-source-no-path", mut("data.source", "file"), "data.path"),
    ("data-missing-file", mut("data", {"source": "file", "path": "nope.txt"}), "data.path"),
    ("data-path-is-folder", mut("data", {"source": "file", "path": "."}), "data.path"),
    ("data-path-nul", mut("data", {"source": "file", "path": "a\x00b"}), "data.path"),
    ("data-path-10k", mut("data", {"source": "file", "path": "p" * 10_000}), "data.path"),
    ("data-path-dev-urandom", mut("data", {"source": "file", "path": "/dev/urandom"}), "not a regular file"),
    ("data-path-int", mut("data", {"source": "file", "path": 5}), "data.path"),
    # --- eval and metric
    ("ks-zero", mut("eval.ks", [0]), "eval.ks"),
    ("ks-huge", mut("eval.ks", [10, 100_000]), "eval.ks"),
    ("ks-too-many", mut("eval.ks", list(range(1, 41))), "eval.ks"),
    ("ks-word", mut("eval.ks", "ten"), "eval.ks"),
    ("ks-empty", mut("eval.ks", []), "eval.ks"),
    ("batch-users-zero", mut("eval.batch_users", 0), "eval.batch_users"),
    ("batch-users-1e9", mut("eval.batch_users", 10**9), "eval.batch_users"),
    ("metric-unknown", mut("metric.name", "val_auc"), "metric.name"),
    ("metric-100k-chars", mut("metric.name", "v" * 100_000), "metric.name"),
    ("metric-mode-up", mut("metric.mode", "up"), "metric.mode"),
    ("metric-not-mapping", mut("metric", "val_ndcg_10"), "metric"),
    # --- scheduler
    ("scheduler-hyperband", mut("scheduler.type", "hyperband"), "scheduler.type"),
    ("grace-zero", mut("scheduler.grace_period", 0), "scheduler.grace_period"),
    ("grace-1e9", mut("scheduler.grace_period", 10**9), "scheduler.grace_period"),
    ("grace-beyond-epochs", mut("scheduler.grace_period", 5), "scheduler.grace_period"),
    ("reduction-factor-one", mut("scheduler.reduction_factor", 1.0), "scheduler.reduction_factor"),
    ("reduction-factor-huge", mut("scheduler.reduction_factor", 1e9), "scheduler.reduction_factor"),
    # --- resources (absolute caps; the cluster's size is a `run` check below)
    ("cpu-negative", mut("resources.cpu", -1), "resources.cpu"),
    ("cpu-1e6", mut("resources.cpu", 10**6), "resources.cpu"),
    ("cpu-word", mut("resources.cpu", "lots"), "resources.cpu"),
    ("cpu-nan", "model: bpr_mf\nresources: {cpu: .nan}\n", "resources.cpu"),
    ("gpu-1000", mut("resources.gpu", 1000), "resources.gpu"),
    ("gpu-negative", mut("resources.gpu", -0.5), "resources.gpu"),
    # --- tracking
    ("uri-bad-ipv6", mut("tracking.uri", "http://[::1/"), "tracking.uri"),
    ("uri-sqlite-in-proc", mut("tracking.uri", "sqlite:////proc/x/mlflow.db"), "tracking.uri"),
    ("uri-sqlite-under-a-file", mut("tracking.uri", "sqlite:///spec.yaml/m.db"), "tracking.uri"),
    ("uri-sqlite-one-slash", mut("tracking.uri", "sqlite:/m.db"), "tracking.uri"),
    ("uri-sqlite-long-name", mut("tracking.uri", "sqlite:///" + "d" * 300 + ".db"), "tracking.uri"),
    ("uri-ftp", mut("tracking.uri", "ftp://host/x"), "tracking.uri"),
    ("uri-no-host", mut("tracking.uri", "http://"), "tracking.uri"),
    ("uri-bad-port", mut("tracking.uri", "http://127.0.0.1:99999"), "tracking.uri"),
    ("uri-3000-chars", mut("tracking.uri", "http://h/" + "x" * 3000), "tracking.uri"),
    ("uri-int", mut("tracking.uri", 5), "tracking.uri"),
    ("storage-http", mut("search.storage", "http://127.0.0.1:5000"), "search.storage"),
    ("storage-plain-path", mut("search.storage", "optuna.db"), "search.storage"),
    ("storage-sqlite-in-proc", mut("search.storage", "sqlite:////proc/x/optuna.db"), "search.storage"),
    ("storage-bad-port", mut("search.storage", "postgresql://u@127.0.0.1:99999/db"), "search.storage"),
    ("storage-list", mut("search.storage", ["sqlite:///a.db"]), "search.storage"),
    ("uri-file-in-proc", mut("tracking.uri", "file:///proc/mlruns"), "tracking.uri"),
    ("experiment-300", mut("tracking.experiment", "e" * 300), "tracking.experiment"),
    # --- run and diagnose
    ("max-failures-low", mut("run.max_failures", -5), "run.max_failures"),
    ("max-failures-1e6", mut("run.max_failures", 10**6), "run.max_failures"),
    ("checkpoints-zero", mut("run.checkpoints_to_keep", 0), "run.checkpoints_to_keep"),
    ("run-storage-http", mut("run.storage", "http://bucket/x"), "run.storage"),
    ("run-storage-keys-in-query", mut("run.storage", "s3://b/p?access_key=AK&secret_key=SK"), "run.storage"),
    ("run-storage-password", mut("run.storage", "s3://AK:SK@b/p"), "run.storage"),
    ("run-storage-no-bucket", mut("run.storage", "s3:///p"), "run.storage"),
    ("run-storage-in-proc", mut("run.storage", "/proc/ckpts"), "run.storage"),
    ("run-storage-int", mut("run.storage", 3), "run.storage"),
    ("diagnose-enabled-yes-string", mut("diagnose.enabled", "yes"), "diagnose.enabled"),
    ("diagnose-epochs-word", mut("diagnose.stuck_epochs", "x"), "diagnose.stuck_epochs"),
    # --- fixed knobs
    ("fixed-list", mut("fixed", [1, 2]), "fixed"),
    ("fixed-epochs-zero", mut("fixed.epochs", 0), "fixed.epochs"),
    ("fixed-epochs-1e9", mut("fixed.epochs", 10**9), "fixed.epochs"),
    ("fixed-batch-size-1e9", mut("fixed.batch_size", 10**9), "fixed.batch_size"),
    ("fixed-dim-1e7", mut("fixed.dim", 10**7), "fixed.dim"),
    ("fixed-lr-word", mut("fixed.lr", "fast"), "fixed.lr"),
    ("fixed-lr-inf", "model: bpr_mf\nfixed: {lr: .inf}\n", "fixed.lr"),
    ("fixed-lr-negative-nan", "model: bpr_mf\nfixed: {lr: -.nan}\n", "fixed.lr"),
    ("fixed-loss-unknown", mut("fixed.loss", "warp"), "fixed.loss"),
    ("fixed-dim-negative", mut("fixed.dim", -8), "fixed.dim"),
    # --- space
    ("space-list", mut("space", ["lr"]), "space"),
    ("space-entry-scalar", mut("space.lr", 0.1), "space.lr"),
    ("space-missing-type", mut("space.lr", {"low": 0.1, "high": 1}), "space.lr.type"),
    ("space-type-uniform", mut("space.lr.type", "uniform"), "space.lr.type"),
    ("space-low-gt-high", mut("space.lr.low", 1.0), "space.lr.low"),
    ("space-log-zero", mut("space.lr.low", 0.0), "space.lr.low"),
    ("space-low-word", mut("space.lr.low", "abc"), "space.lr.low"),
    ("space-low-nan", "model: bpr_mf\nspace:\n  lr: {type: float, low: .nan, high: 1}\n", "space.lr.low"),
    ("space-int-float-bounds", mut("space.num_negatives.low", 0.5), "space.num_negatives.low"),
    ("space-step-negative", mut("space.num_negatives.step", -1), "space.num_negatives.step"),
    ("space-step-with-log", mut("space.lr.step", 0.1), "space.lr.step"),
    ("space-empty-choices", mut("space.loss.choices", []), "space.loss.choices"),
    ("space-duplicate-choices", mut("space.loss.choices", ["bpr", "bpr"]), "space.loss.choices"),
    ("space-categorical-with-low", mut("space.loss.low", 1), "space.loss.low"),
    ("space-epochs-high-1e9", "model: bpr_mf\nspace:\n  epochs: {type: int, low: 1, high: 1000000000}\n",
     "space.epochs.high"),
    ("space-batch-choices-1e9", mut("space.batch_size", {"type": "categorical", "choices": [256, 10**9]}),
     "space.batch_size.choices"),
    ("space-fixed-and-searched", mut("fixed.lr", 0.01), "space.lr"),
    ("space-doc-list", mut("space.lr.doc", ["x"]), "space.lr.doc"),
    ("when-unknown-knob", mut("space.num_negatives.when", {"loss_fn": "bpr"}), "space.num_negatives.when"),
    ("when-never-sampled", mut("space.num_negatives.when", {"loss": "hinge"}), "space.num_negatives.when"),
    ("when-non-categorical", mut("space.num_negatives.when", {"lr": 0.01}), "space.num_negatives.when"),
    ("when-not-mapping", mut("space.num_negatives.when", "loss"), "space.num_negatives.when"),
    ("when-value-100k", mut("space.num_negatives.when", {"loss": "x" * 100_000}), "space.num_negatives.when"),
]


def files_under(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, dirs, fs in os.walk(root) for f in fs + dirs}


def check_one_line(capsys, code: int, expect_code: int = 2) -> str:
    """The contract: the exit code, one stderr line of at most 300 chars; returns the line."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == expect_code, err[:2000]
    assert len(lines) == 1, err[:2000]
    assert len(lines[0]) <= 300, lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("content, needle", [c[1:] for c in SPEC], ids=[c[0] for c in SPEC])
def test_bad_spec_file(tmp_path, capsys, monkeypatch, content, needle):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = files_under(tmp_path)
    line = check_one_line(capsys, main(["validate", str(spec)]))
    assert line.startswith(f"tuner: error: {spec}"), line
    assert needle in line, line
    assert files_under(tmp_path) == before


# --- data files, read by `tuner run` before anything is written -------------------------------------

def data_spec(name: str, fmt: str = "auto", attrs: str | None = None) -> str:
    data = {"source": "file", "path": name, "format": fmt, **({"item_attributes": attrs} if attrs else {})}
    return mut("data", data)


GOOD_PAIRS = "".join(f"u{u} i{(u + k) % 7}\n" for u in range(5) for k in range(4))
DATA = [
    # (id, file name, content, format, what the error names)
    ("pairs-three-fields", "d.txt", "1 10\n1 11\n1 12\n2 10 x\n", "pairs", "d.txt:4"),
    ("pairs-10mb-line", "d.txt", "1 10\n" + "x " * (BIG // 2) + "\n", "pairs", "d.txt:2"),
    ("pairs-one-field", "d.txt", "1 10\n1 11\n1 12\n2\n", "pairs", "d.txt:4"),
    ("pairs-empty", "d.txt", "", "pairs", "d.txt"),
    ("pairs-blank-lines-only", "d.txt", "\n\n  \n", "auto", "d.txt"),
    ("pairs-non-utf8", "d.txt", b"1 10\n1 \xff\n", "pairs", "d.txt:2"),
    ("pairs-10mb-user-one-interaction", "d.txt", "u" * BIG + " a\n", "pairs", "d.txt:1"),
    ("pairs-binary-garbage", "d.txt", bytes(range(256)) * 64, "auto", "d.txt"),
    ("sequences-10mb-token", "d.txt", "1 a b c\n" + "z" * BIG + "\n", "sequences", "d.txt:2"),
    ("sequences-duplicate-long-user", "d.txt", ("u" * 5000 + " a b c\n") * 2, "sequences", "d.txt:2"),
    ("sequences-short-user", "d.txt", "1 a b c\n2 a\n", "sequences", "d.txt:2"),
    ("csv-field-over-limit", "d.csv", "user,item\n1," + "x" * 200_000 + "\n", "csv", "d.csv:2"),
    ("csv-10mb-quoted-field", "d.csv", 'user,item\n1,"' + "x" * BIG + '"\n', "csv", "d.csv"),
    ("csv-bad-timestamp-long", "d.csv", "user,item,timestamp\n1,a," + "t" * 100_000 + "\n", "csv", "d.csv:2"),
    ("csv-nan-timestamp", "d.csv", "user,item,ts\n1,a,nan\n", "csv", "d.csv:2"),
    ("csv-missing-item-column", "d.csv", "user,thing\n1,2\n", "csv", "d.csv:1"),
    ("csv-long-header", "d.csv", ",".join(["c" * 1000] * 100) + "\n", "csv", "d.csv:1"),
    ("csv-wrong-field-count", "d.csv", "user,item\n1,a\n1,a,b\n", "csv", "d.csv:3"),
    ("csv-empty-id", "d.csv", "user,item\n1,\n", "csv", "d.csv:2"),
    ("csv-empty", "d.csv", "", "csv", "d.csv"),
    ("csv-non-utf8", "d.csv", b"user,item\n1,\xe9\n", "csv", "d.csv:2"),
    ("tsv-wrong-field-count", "d.tsv", "user\titem\n1\ta\tb\n", "tsv", "d.tsv:2"),
    ("inter-untyped-header", "d.inter", "user_id\titem_id\n1\ta\n", "inter", "d.inter:1"),
    ("inter-field-over-limit", "d.inter", "user_id:token\titem_id:token\n1\t" + "x" * 200_000 + "\n", "inter",
     "d.inter:2"),
]


@pytest.fixture
def no_sweep(monkeypatch):
    """Data errors must come before the first write: reaching the tracking check fails the case."""
    import tuner.tracking

    def reached(*_a, **_k):
        raise AssertionError("reached MLflow: the error came too late")

    monkeypatch.setattr(tuner.tracking, "check_reachable", reached)
    monkeypatch.setattr(tuner.tracking, "connect", reached)


@pytest.mark.parametrize("name, content, fmt, needle", [c[1:] for c in DATA], ids=[c[0] for c in DATA])
def test_bad_data_file(tmp_path, capsys, monkeypatch, no_sweep, name, content, fmt, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "spec.yaml").write_text(data_spec(name, fmt))
    before = files_under(tmp_path)
    line = check_one_line(capsys, main(["run", "spec.yaml", "--output", "out", "--quiet"]))
    assert line.startswith(f"tuner: error: {tmp_path / name}"), line
    assert needle in line, line
    assert files_under(tmp_path) == before and not (tmp_path / "out").exists()


ATTRS = [
    ("attrs-not-json", "{not json", "item attributes"),
    ("attrs-non-utf8", b'{"i0": [1]}\xff', "item attributes"),
    ("attrs-list", "[1, 2]", "JSON object"),
    ("attrs-value-not-list", '{"i0": 5}', "i0"),
    ("attrs-value-nested", '{"i0": [[1], {"a": 2}]}', "i0"),
    ("attrs-value-10mb-string", '{"i0": "' + "a" * BIG + '"}', "i0"),
    ("attrs-deep-nesting", "[" * 100_000 + "]" * 100_000, "item attributes"),
    ("attrs-empty", "", "item attributes"),
]


@pytest.mark.parametrize("content, needle", [c[1:] for c in ATTRS], ids=[c[0] for c in ATTRS])
def test_bad_item_attributes(tmp_path, capsys, monkeypatch, no_sweep, content, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.txt").write_text(GOOD_PAIRS)
    (tmp_path / "a.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "spec.yaml").write_text(data_spec("d.txt", "pairs", attrs="a.json"))
    before = files_under(tmp_path)
    line = check_one_line(capsys, main(["run", "spec.yaml", "--output", "out", "--quiet"]))
    assert line.startswith(f"tuner: error: {tmp_path / 'a.json'}") or f"{tmp_path / 'a.json'}" in line, line
    assert needle in line, line
    assert files_under(tmp_path) == before


# --- command lines --------------------------------------------------------------------------------

def _sweep(tmp_path, content) -> list[str]:
    """A folder that looks like a sweep (ray/ and sweep.json with `content`)."""
    d = tmp_path / "sw"
    (d / "ray").mkdir(parents=True)
    (d / "sweep.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    return [str(d)]


META = {"spec_path": "spec.yaml", "output": "out", "tracking_uri": "sqlite:///out/mlflow.db",
        "experiment_id": "1", "parent_run_id": "abc"}
RUN = ["run", "spec.yaml", "--output", "out", "--quiet"]

def _claim(t, extra: str) -> str:
    """A claim file on spec.yaml with one more top-level line (line 5)."""
    (t / "claim.yaml").write_text("spec: spec.yaml\na: {name: A, set: {}}\nb: {name: B, set: {fixed.lr: 0.01}}\n"
                                  f"seeds: 2\n{extra}\n")
    return "claim.yaml"


# (id, argv (callable of tmp_path for folders), what the one line must name)
ARGV = [
    ("validate-missing-file", ["validate", "missing.yaml"], "missing.yaml"),
    ("validate-a-folder", ["validate", "."], "not a regular file"),
    ("validate-dev-urandom", ["validate", "/dev/urandom"], "/dev/urandom"),
    ("validate-dev-zero", ["validate", "/dev/zero"], "/dev/zero"),
    ("validate-fifo", lambda t: (os.mkfifo(t / "fifo"), ["validate", str(t / "fifo")])[1], "not a regular file"),
    ("set-without-equals", ["validate", "spec.yaml", "--set", "search.samples"], "--set"),
    ("set-empty-key", ["validate", "spec.yaml", "--set", "=3"], "--set"),
    ("set-empty-key-part", ["validate", "spec.yaml", "--set", "search..samples=3"], "--set"),
    ("set-bad-yaml", ["validate", "spec.yaml", "--set", "search.samples=[1"], "--set search.samples"),
    ("set-duplicate-key", ["validate", "spec.yaml", "--set", "search={samples: 2, samples: 3}"], "duplicate key"),
    ("set-alias", ["validate", "spec.yaml", "--set", "search.samples=&a 3"], "aliases"),
    ("set-deep", ["validate", "spec.yaml", "--set", "fixed=" + "[" * 500 + "]" * 500], "--set fixed"),
    ("set-huge-int", ["validate", "spec.yaml", "--set", "search.samples=" + "9" * 5000], "--set search.samples"),
    ("set-100k-value", ["validate", "spec.yaml", "--set", "fixed.loss=" + "x" * 100_000], "--set fixed.loss"),
    ("set-tag-int-empty", ["validate", "spec.yaml", "--set", "search.samples=!!int"], "--set search.samples"),
    ("set-python-tag", ["validate", "spec.yaml", "--set", "search.samples=!!python/name:os.system"], "--set"),
    ("set-samples-1e23", ["validate", "spec.yaml", "--set", "search.samples=1e23"], "search.samples"),
    ("set-seed-1.0e23", ["validate", "spec.yaml", "--set", "search.seed=1.0e23"], "search.seed"),
    ("set-n-items-1e9", ["validate", "spec.yaml", "--set", "data.synthetic.n_items=1000000000"],
     "data.synthetic.n_items"),
    ("set-name-300", ["validate", "spec.yaml", "--set", "name=" + "n" * 300], "name"),
    ("set-into-scalar", ["validate", "spec.yaml", "--set", "search.samples.x=1"], "search.samples"),
    ("run-cpu-1000", RUN + ["--set", "resources.cpu=1000"], "resources.cpu"),
    ("run-gpu-64", RUN + ["--set", "resources.gpu=64"], "resources.gpu"),
    ("run-samples-1e9", RUN + ["--samples", str(10**9)], "search.samples"),
    ("run-seed-negative", RUN + ["--seed", "-1"], "search.seed"),
    ("run-name-300", RUN + ["--name", "n" * 300], "name"),
    ("run-max-epochs-zero", RUN + ["--max-epochs", "0"], "--max-epochs"),
    ("run-max-epochs-1e9", RUN + ["--max-epochs", str(10**9)], "--max-epochs"),
    ("run-uri-bad-ipv6", RUN + ["--tracking-uri", "http://[::1/"], "tracking.uri"),
    ("run-uri-sqlite-proc", RUN + ["--tracking-uri", "sqlite:////proc/x/mlflow.db"], "tracking.uri"),
    ("run-uri-secret-hidden", RUN + ["--tracking-uri", "ftp://alice:s3cret@host/x"], "***@"),
    ("run-storage-secret-hidden", RUN + ["--storage", "s3://b/p?secret_key=s3cret&scheme=http"], "run.storage"),
    ("run-storage-gopher", RUN + ["--storage", "gopher://b/p"], "run.storage"),
    ("resume-storage-secret-hidden", lambda t: ["resume", *_sweep(t, json.dumps(META)), "--storage",
                                                "s3://alice:s3cret@b/p"], "--storage"),
    ("resume-storage-missing-folder", lambda t: ["resume", *_sweep(t, json.dumps(META)), "--storage",
                                                 str(t / "gone")], "no such folder"),
    ("run-output-is-a-file", ["run", "spec.yaml", "--output", "spec.yaml"], "--output"),
    ("run-output-under-a-file", ["run", "spec.yaml", "--output", "spec.yaml/out"], "--output"),
    ("run-output-in-proc", ["run", "spec.yaml", "--output", "/proc/tuner-out"], "--output"),
    ("run-output-nul", ["run", "spec.yaml", "--output", "o\x00ut"], "--output"),
    ("run-samples-word", RUN + ["--samples", "many"], "--samples"),
    ("run-unknown-flag", RUN + ["--sampels", "3"], "--sampels"),
    ("compare-output-is-a-file", ["compare", "spec.yaml", "--b", "fixed.lr=0.01", "--output", "spec.yaml"],
     "--output"),
    ("compare-b-duplicate-key", ["compare", "spec.yaml", "--b", "fixed={lr: 1, lr: 2}", "--output", "out"], "--b"),
    ("compare-spec-duplicate-key", lambda t: ((t / "a.yaml").write_text("model: bpr_mf\nmodel: bpr_mf\n"),
                                              ["compare", "a.yaml", "--b", "fixed.lr=0.01"])[1], "a.yaml:2"),
    ("claim-patience-zero", lambda t: ["validate", _claim(t, "patience: 0")], "claim.yaml:5: patience"),
    ("claim-patience-word", lambda t: ["validate", _claim(t, "patience: x")], "claim.yaml:5: patience"),
    ("claim-patience-float", lambda t: ["validate", _claim(t, "patience: 2.5")], "1..1000"),
    ("claim-patience-huge", lambda t: ["validate", _claim(t, "patience: 100000")], "patience"),
    ("compare-claim-patience-bool", lambda t: ["compare", _claim(t, "patience: true"), "--output", "out"], "patience"),
    ("analyze-bad-sweep-json", lambda t: ["analyze", *_sweep(t, "{")], "sweep.json:1"),
    ("resume-no-folder", ["resume", "no-such-sweep"], "no-such-sweep"),
    ("resume-no-sweep-json", ["resume", "."], "not a tuner sweep folder"),
    ("resume-not-json", lambda t: ["resume", *_sweep(t, "{oops")], "sweep.json:1"),
    ("resume-truncated-json", lambda t: ["resume", *_sweep(t, '{"spec_path": "a.y')], "sweep.json"),
    ("resume-json-list", lambda t: ["resume", *_sweep(t, "[1, 2]")], "JSON object"),
    ("resume-json-missing-keys", lambda t: ["resume", *_sweep(t, '{"spec_path": "spec.yaml"}')], "output"),
    ("resume-json-wrong-type", lambda t: ["resume", *_sweep(t, json.dumps({**META, "output": 5}))],
     "output"),
    ("resume-json-non-utf8", lambda t: ["resume", *_sweep(t, b'{"a": "\xff"}')], "sweep.json:1"),
    ("resume-json-deep", lambda t: ["resume", *_sweep(t, "[" * 100_000 + "]" * 100_000)], "sweep.json"),
    ("resume-json-over-1-mib", lambda t: ["resume", *_sweep(t, " " * (2 << 20) + "{}")], "sweep.json"),
    ("resume-json-is-folder", lambda t: (os.makedirs(t / "sf" / "sweep.json"), ["resume", str(t / "sf")])[1],
     "sweep.json"),
    ("ui-port-70000", ["ui", "--port", "70000"], "--port"),
    ("ui-port-negative", ["ui", "--port", "-1"], "--port"),
    ("ui-port-word", ["ui", "--port", "http"], "--port"),
    ("ui-bad-sweep-json", lambda t: ["ui", *_sweep(t, "nope")], "sweep.json"),
    ("no-command", [], "command"),
    ("unknown-command", ["frobnicate"], "frobnicate"),
]


@pytest.mark.parametrize("argv, needle", [c[1:] for c in ARGV], ids=[c[0] for c in ARGV])
def test_bad_command_line(tmp_path, capsys, monkeypatch, no_sweep, argv, needle):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "spec.yaml").write_text(GOOD_TEXT)
    argv = argv(tmp_path) if callable(argv) else argv
    before = files_under(tmp_path)
    line = check_one_line(capsys, main(argv))
    assert needle in line, line
    assert "s3cret" not in line
    assert files_under(tmp_path) == before and not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (run-output-in-proc covers root)")
def test_read_only_output_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(GOOD_TEXT)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        for out in ("ro", "ro/sub"):
            line = check_one_line(capsys, main(["run", "spec.yaml", "--output", out, "--quiet"]))
            assert "--output" in line and "writable" in line, line
    finally:
        ro.chmod(stat.S_IRWXU)


VALID = [
    ("good", GOOD_TEXT, []),
    ("good-with-bom", "\ufeff" + GOOD_TEXT, []),
    ("good-crlf", GOOD_TEXT.replace("\n", "\r\n"), []),
    ("good-unicode-name", mut("name", "café-1"), []),
    ("good-name-64", mut("name", "n" * 64), []),
    ("good-set-samples", GOOD_TEXT, ["--set", "search.samples=8"]),
    ("good-sqlite-uri-new-folder", mut("tracking.uri", "sqlite:///new/sub/mlflow.db"), []),
    ("good-http-uri", mut("tracking.uri", "http://127.0.0.1:5000"), []),
    ("good-caps", mut("search", {"samples": 100_000, "concurrency": 1024, "seed": 2**32 - 1}), []),
]


@pytest.mark.parametrize("content, extra", [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_inputs_pass(tmp_path, capsys, monkeypatch, content, extra):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(content, encoding="utf-8")
    before = files_under(tmp_path)
    code = main(["validate", "spec.yaml", *extra])
    out, err = capsys.readouterr()
    assert code == 0 and err == "" and "ok" in out, err
    assert files_under(tmp_path) == before


def test_internal_errors_are_one_line(capsys, monkeypatch):
    """A bug of ours is still one line (exit 1), and TUNER_DEBUG=1 shows the traceback."""
    import tuner.cli

    def boom(args):
        raise RuntimeError("kaboom\n" + "second line " * 100)

    monkeypatch.setattr(tuner.cli, "cmd_validate", boom)
    monkeypatch.delenv("TUNER_DEBUG", raising=False)
    line = check_one_line(capsys, main(["validate", "x.yaml"]), expect_code=1)
    assert line.startswith("tuner: internal error: RuntimeError: kaboom") and "TUNER_DEBUG" in line
    monkeypatch.setenv("TUNER_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["validate", "x.yaml"])


def test_check_resources_names_the_key():
    from tuner import spec as S
    from trainables.errors import TunerError

    spec = S.parse(yaml.safe_load(mut("resources", {"cpu": 4, "gpu": 0.5})), "s.yaml")
    S.check_resources(spec, 4.0, 1.0)
    for cpus, gpus, key in ((2.0, 1.0, "resources.cpu"), (8.0, 0.0, "resources.gpu")):
        with pytest.raises(TunerError, match=key):
            S.check_resources(spec, cpus, gpus)


def test_read_sweep_meta_accepts_what_run_writes(tmp_path):
    """The keys and types sweep.run writes (tuner/sweep.py) pass; so do older files without the optional ones."""
    from tuner.sweepdir import read_sweep_meta

    meta = {"spec_path": "/a/spec.yaml", "overrides": {"search.samples": 2}, "smoke": False, "max_epochs": None,
            "output": "/a/runs", "tracking_uri": "sqlite:////a/runs/mlflow.db", "experiment_id": "1",
            "parent_run_id": "f00", "study_name": "t-20260101-000000"}
    (tmp_path / "sweep.json").write_text(json.dumps(meta, indent=2))
    assert read_sweep_meta(str(tmp_path)) == meta
    (tmp_path / "sweep.json").write_text(json.dumps(META))
    assert read_sweep_meta(str(tmp_path)) == META
