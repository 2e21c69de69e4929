"""Multi-view classification data: an embedded seeded generator, a file loader, F1 metrics.

The classification trainables (trainables/fusion_classifier.py) read their data here through
ModelEntry.load_data, with the spec's ordinary `data` section:

    data: {source: synthetic, synthetic: {n_users: 3000, seed: 0}}   # n_users = number of samples
    data: {source: file, path: my_views.yaml}                         # a manifest, see `load`

For the synthetic source `data.synthetic.n_users` is read as the number of samples and `seed`
as the generator's seed (`n_items` and `mean_length` are ignored), so `--smoke-test`'s tiny
data setting applies unchanged. `data.format` must stay `auto`; `data.item_attributes` is not
used.

Planted truth of `generate` (returned in `MultiViewData.truth`):
- class imbalance: class c has prior proportional to imbalance^c (4 classes, 0.5: 8:4:2:1);
- view-specific signal: view v sees class c unless (c - v) mod V == V - 1; in a view that does
  not see it, a class has the mean of the next class that view sees, so the two are confused
  there. Every class is hidden in some view and no single view separates all classes: fusion
  is needed (default data: logistic regression valid macro-F1 0.72 on the best single view, 0.96 on all);
- noisier views: view v's isotropic noise has standard deviation noise[v] (0.5, 1.0, 2.0);
- shared latent: every sample has z ~ N(0, I_latent) seen by all views through a random loading,
  so the views of one sample agree beyond the class (what the contrastive term can align).
x_v = separation * u_{v,y'} + z A_v + noise[v] * eps, u unit vectors, y' = y or the class y looks like.

Splits: seeded, stratified 70/15/15 train/valid/test (every class with >= 3 samples gets at least
one sample in valid and test), unless the manifest gives a split file. Every view is
standardised (z-score per column) with training-split statistics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from trainables.errors import TunerError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True, eq=False)
class MultiViewData:
    name: str
    views: tuple[str, ...]
    features: tuple[np.ndarray, ...]  # float32 [n, d_v] per view, standardised with train stats
    labels: np.ndarray  # int64 [n] in 0..n_classes-1
    n_classes: int
    train_idx: np.ndarray  # int64 indices into the samples
    valid_idx: np.ndarray
    test_idx: np.ndarray
    classes: tuple[str, ...] = ()  # original label of each class id
    truth: dict = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def view_dims(self) -> tuple[int, ...]:
        return tuple(int(x.shape[1]) for x in self.features)

    def indices(self, which: str) -> np.ndarray:
        if which not in SPLITS:
            raise ValueError(f"unknown split {which!r}; valid: {', '.join(SPLITS)}")
        return {"train": self.train_idx, "valid": self.valid_idx, "test": self.test_idx}[which]

    def split(self, which: str) -> tuple[list[np.ndarray], np.ndarray]:
        """([view arrays], labels) of one split."""
        idx = self.indices(which)
        return [x[idx] for x in self.features], self.labels[idx]

    def class_counts(self, which: str = "train") -> np.ndarray:
        return np.bincount(self.labels[self.indices(which)], minlength=self.n_classes).astype(np.int64)

    def describe(self) -> str:
        dims = ", ".join(f"{v}[{d}]" for v, d in zip(self.views, self.view_dims))
        counts = "/".join(str(int(c)) for c in np.bincount(self.labels, minlength=self.n_classes))
        return (f"{self.name}: {self.n_samples:,} samples, {self.n_classes} classes ({counts}), views {dims}; "
                f"split {len(self.train_idx)}/{len(self.valid_idx)}/{len(self.test_idx)}")


# -- splits and standardisation ----------------------------------------------------------------

def stratified_split(labels: np.ndarray, n_classes: int, seed: int = 0, valid_frac: float = 0.15,
                     test_frac: float = 0.15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in range(n_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = idx.shape[0]
        n_val, n_test = int(round(valid_frac * n)), int(round(test_frac * n))
        if n >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val : n_val + n_test])
        parts[0].append(idx[n_val + n_test :])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)  # type: ignore[return-value]


def standardise(features: Sequence[np.ndarray], train_idx: np.ndarray) -> tuple[np.ndarray, ...]:
    out = []
    for x in features:
        mu = x[train_idx].mean(0, keepdims=True)
        sd = x[train_idx].std(0, keepdims=True)
        out.append(((x - mu) / np.where(sd > 1e-8, sd, 1.0)).astype(np.float32))
    return tuple(out)


# -- the embedded generator ---------------------------------------------------------------------

def generate(
    n_samples: int = 3000,
    n_classes: int = 4,
    view_dims: Sequence[int] = (32, 16, 8),
    noise: Sequence[float] = (0.5, 1.0, 2.0),
    latent_dim: int = 8,
    separation: float = 2.0,
    imbalance: float = 0.5,
    seed: int = 0,
) -> MultiViewData:
    """Seeded multi-view, class-imbalanced data (module docstring: the planted truth)."""
    if len(view_dims) != len(noise) or len(view_dims) < 2:
        raise ValueError("need at least 2 views and one noise level per view")
    rng = np.random.default_rng(seed)
    n_views = len(view_dims)
    priors = imbalance ** np.arange(n_classes, dtype=np.float64)
    priors /= priors.sum()
    counts = np.maximum(np.round(priors * n_samples).astype(np.int64), 3)
    counts[0] += n_samples - counts.sum()  # exact total; the majority class absorbs rounding
    labels = rng.permutation(np.repeat(np.arange(n_classes), counts)).astype(np.int64)
    sees = np.array([[(c - v) % n_views != n_views - 1 for c in range(n_classes)] for v in range(n_views)])
    z = rng.standard_normal((n_samples, latent_dim))
    features = []
    for v, (d, sigma) in enumerate(zip(view_dims, noise)):
        means = rng.standard_normal((n_classes, d))
        means *= separation / np.linalg.norm(means, axis=1, keepdims=True)
        for c in np.flatnonzero(~sees[v]):  # an unseen class looks like the next seen class here
            k = next(k for k in range(1, n_classes + 1) if sees[v][(c + k) % n_classes])
            means[c] = means[(c + k) % n_classes]
        loading = rng.standard_normal((latent_dim, d)) / np.sqrt(latent_dim)
        x = means[labels] + z @ loading + sigma * rng.standard_normal((n_samples, d))
        features.append(x.astype(np.float32))
    tr, va, te = stratified_split(labels, n_classes, seed)
    return MultiViewData(
        name=f"multiview-synthetic(n={n_samples},classes={n_classes},views={n_views},seed={seed})",
        views=tuple(f"view{v}" for v in range(n_views)),
        features=standardise(features, tr),
        labels=labels, n_classes=n_classes, train_idx=tr, valid_idx=va, test_idx=te,
        classes=tuple(str(c) for c in range(n_classes)),
        truth={"priors": priors, "view_sees_class": sees, "noise": np.asarray(noise, dtype=np.float64)},
    )


# -- the file loader ------------------------------------------------------------------------------

def _read_array(path: str, what: str) -> np.ndarray:
    """One .npy / .npz (a single array, or one named x/features/labels/y) / .parquet / .txt file."""
    if not os.path.isfile(path):
        raise TunerError(f"{path}: no such {what} file")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            return np.load(path, allow_pickle=False)
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if len(keys) == 1:
                    return z[keys[0]]
                for k in ("x", "features", "labels", "y"):
                    if k in keys:
                        return z[k]
                raise TunerError(f"{path}: .npz holds {len(keys)} arrays ({', '.join(keys[:8])}); "
                                 f"keep one, or name it x/features (labels/y for labels)")
        if ext == ".parquet":
            try:
                import pandas as pd

                df = pd.read_parquet(path)
            except ImportError as e:
                raise TunerError(f"{path}: reading parquet needs pyarrow or fastparquet ({e})") from None
            if what == "labels":
                cols = [c for c in df.columns if str(c).lower() in ("label", "labels", "y", "class")]
                if len(df.columns) == 1:
                    cols = list(df.columns)
                if not cols:
                    raise TunerError(f"{path}: labels parquet needs one column, or one named label/y/class")
                return df[cols[0]].to_numpy()
            bad = [c for c in df.columns if not np.issubdtype(df[c].dtype, np.number)]
            if bad:
                raise TunerError(f"{path}: non-numeric column {bad[0]!r} in a feature file")
            return df.to_numpy(dtype=np.float64)
        if ext in (".txt", ".csv", ".tsv") and what == "labels":
            with open(path, encoding="utf-8") as fh:
                return np.array([ln.strip() for ln in fh if ln.strip()], dtype=object)
    except TunerError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise TunerError(f"{path}: cannot read {what} file: {e}") from None
    except Exception as e:  # noqa: BLE001 - parquet/zip errors come in many types
        raise TunerError(f"{path}: cannot read {what} file: {type(e).__name__}: {e}") from None
    valid = ".npy, .npz, .parquet" + (", .txt (one label per line)" if what == "labels" else "")
    raise TunerError(f"{path}: unsupported {what} file type {ext or '(none)'!r}; use {valid}")


def _features(path: str) -> np.ndarray:
    x = _read_array(path, "feature")
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TunerError(f"{path}: features must be numeric, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise TunerError(f"{path}: expected a 2-D array [samples, features], got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise TunerError(f"{path}: empty feature array (shape {x.shape})")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        r = int(np.argwhere(~np.isfinite(x))[0, 0])
        raise TunerError(f"{path}: non-finite value (NaN or inf) in row {r}")
    return x


def _labels(path: str) -> tuple[np.ndarray, tuple[str, ...]]:
    y = _read_array(path, "labels")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise TunerError(f"{path}: expected one label per sample (1-D), got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise TunerError(f"{path}: float labels must be whole numbers")
        y = y.astype(np.int64)
    values, codes = np.unique(y.astype(str) if y.dtype == object else y, return_inverse=True)
    if len(values) < 2:
        raise TunerError(f"{path}: need at least 2 classes, found {len(values)}")
    return codes.astype(np.int64), tuple(str(v) for v in values)


def _split_file(path: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = _read_array(path, "split")
    if s.ndim != 1 or s.shape[0] != n:
        raise TunerError(f"{path}: expected {n} split entries (one per sample), got shape {s.shape}")
    names = {"train": 0, "valid": 1, "val": 1, "validation": 1, "test": 2}
    if s.dtype.kind in "iu":
        codes = s.astype(np.int64)
    else:
        try:
            codes = np.array([names[str(v).strip().lower()] for v in s], dtype=np.int64)
        except KeyError as e:
            raise TunerError(f"{path}: unknown split value {e.args[0]!r}; use train/valid/test or 0/1/2") from None
    if codes.min() < 0 or codes.max() > 2:
        raise TunerError(f"{path}: split codes must be 0 (train), 1 (valid) or 2 (test)")
    out = tuple(np.flatnonzero(codes == k).astype(np.int64) for k in range(3))
    for k, part in zip(SPLITS, out):
        if part.size == 0:
            raise TunerError(f"{path}: the {k} split is empty")
    return out  # type: ignore[return-value]


_MANIFEST_KEYS = ("views", "labels", "split", "name")


def load(path: str, seed: int = 0) -> MultiViewData:
    """Read a manifest (YAML or JSON) naming one feature file per view and a labels file:

        views:                 # two or more; .npy / .npz / .parquet, rows = samples, same order
          image: image.npy
          text: text.parquet
        labels: labels.npy     # .npy / .npz / .parquet / .txt; integers or strings
        split: split.npy       # optional: train/valid/test (or 0/1/2) per sample
        name: my-dataset       # optional

    Relative paths are resolved against the manifest's folder. Every problem is a TunerError
    naming the offending file.
    """
    if not os.path.isfile(path):
        raise TunerError(f"{path}: no such manifest file")
    from trainables import yamlio

    raw = yamlio.parse_text(yamlio.read_text(path, what="multi-view manifest"), path)  # strict, as spec files
    if not isinstance(raw, dict):
        raise TunerError(f"{path}: a multi-view manifest is a mapping with 'views' and 'labels' (see trainables.multiview)")
    for k in raw:
        if k not in _MANIFEST_KEYS:
            raise TunerError(f"{path}: {k}: unknown key; valid keys: {', '.join(_MANIFEST_KEYS)}")
    views = raw.get("views")
    if not isinstance(views, dict) or len(views) < 2:
        raise TunerError(f"{path}: views: need a mapping of at least 2 views, name -> feature file")
    if "labels" not in raw or not isinstance(raw["labels"], str):
        raise TunerError(f"{path}: labels: missing; give the labels file")
    def resolve(p: Any, key: str) -> str:
        if not isinstance(p, str) or not p:
            raise TunerError(f"{path}: {key}: expected a file path, got {p!r}")
        return yamlio.beside(path, p)

    labels_path = resolve(raw["labels"], "labels")
    labels, classes = _labels(labels_path)
    n = labels.shape[0]
    feats = []
    for name, p in views.items():
        fp = resolve(p, f"views.{name}")
        x = _features(fp)
        if x.shape[0] != n:
            raise TunerError(f"{fp}: {x.shape[0]} rows, but {labels_path} has {n} labels")
        feats.append(x)
    if raw.get("split") is not None:
        tr, va, te = _split_file(resolve(raw["split"], "split"), n)
    else:
        small = [classes[c] for c, k in enumerate(np.bincount(labels)) if k < 3]
        if small:
            raise TunerError(f"{labels_path}: class {small[0]!r} has fewer than 3 samples; "
                             f"a stratified train/valid/test split needs 3 (or give a split file)")
        tr, va, te = stratified_split(labels, len(classes), seed)
    name = raw.get("name") or os.path.splitext(os.path.basename(path))[0]
    return MultiViewData(str(name), tuple(str(v) for v in views), standardise(feats, tr), labels,
                         len(classes), tr, va, te, classes=classes)


def dataset_for(spec) -> MultiViewData:
    """The ModelEntry.load_data hook of classification models (module docstring: the mapping)."""
    d = spec.data
    if d.item_attributes:
        raise TunerError(f"{spec.path}: data.item_attributes: not used by classification model {spec.model!r}")
    if d.source == "synthetic":
        return generate(n_samples=d.synthetic.n_users, seed=d.synthetic.seed)
    if d.format != "auto":
        raise TunerError(f"{spec.path}: data.format: classification data is a multi-view manifest; leave format: auto")
    return load(spec.data_path, seed=0)


# -- metrics ------------------------------------------------------------------------------------

def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy, macro_f1 and f1_class<c> for every class.

    F1_c = 2 TP / (2 TP + FP + FN), 0 when the class is neither present nor predicted; macro-F1
    averages F1 over the classes that occur in y_true or y_pred (scikit-learn's f1_score with
    average='macro' and its default labels).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    present = denom > 0
    out = {"accuracy": float(tp.sum() / max(len(y_true), 1)),
           "macro_f1": float(f1[present].mean()) if present.any() else 0.0}
    out.update({f"f1_class{c}": float(f1[c]) for c in range(n_classes)})
    return out
