"""A sweep's pictures and one self-contained HTML page: `write_report(...)`.

Inputs are what a finished sweep already has: the trials table (analysis/trials.py columns:
trial, trial_id, status, epochs_run, best_<metric>, last_<metric>, error, one column per
searched knob), per-trial histories (trial number -> DataFrame with `epoch` and the metric) and
an importance dict (tuner/importance.py). Plots use matplotlib's Figure directly (Agg, no
pyplot), so nothing here touches global backend state or needs a display.
"""

from __future__ import annotations

import base64
import html
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

STATUS_COLOR = {"completed": "C0", "stopped_early": "C1", "errored": "C3"}
PNG_META = {"Software": None}  # keeps matplotlib's URL out of the files


def trial_name(number: Any, trial_id: Any = "") -> str:
    """trial-003, like the MLflow child run names (Optuna's 0-based numbers); the Ray id when the
    number is unknown (None, NaN or negative)."""
    try:
        n = int(number)
    except (TypeError, ValueError):
        n = -1
    return f"trial-{n:03d}" if n >= 0 else str(trial_id or "trial-?")


def _is_numeric(values: pd.Series) -> bool:
    vals = values.dropna()
    return len(vals) > 0 and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                                 for v in vals)


def _log_scale(values: pd.Series) -> bool:
    """Log axis for a positive numeric knob whose values span more than 100x (lr, weight decay)."""
    vals = values.dropna()
    return _is_numeric(values) and bool((vals > 0).all()) and vals.max() / vals.min() > 100


def _save(fig: Figure, path: str) -> str:
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata=PNG_META)
    return path


# -- plots ----------------------------------------------------------------------------------
def plot_curves(path: str, table: pd.DataFrame, histories: Mapping[int, pd.DataFrame], metric: str,
                best: int | None) -> str:
    """Every trial's validation curve; an x marks where ASHA (or a stopper) cut a trial short."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for _, row in table.iterrows():
        h = histories.get(int(row["trial"]))
        if h is None or metric not in h or h.empty:
            continue
        color = STATUS_COLOR.get(row["status"], "grey")
        is_best = best is not None and int(row["trial"]) == best
        ax.plot(h["epoch"], h[metric], color="black" if is_best else color, lw=2.2 if is_best else 1.0,
                alpha=1.0 if is_best else 0.7, marker="." if len(h) < 30 else None, zorder=3 if is_best else 2)
        if row["status"] == "stopped_early":
            ax.plot(h["epoch"].iloc[-1], h[metric].iloc[-1], "x", color=color, ms=8, mew=2, zorder=4)
    handles = [Line2D([], [], color=c, label=s.replace("_", " ")) for s, c in STATUS_COLOR.items()
               if (table["status"] == s).any()]
    handles.append(Line2D([], [], color=STATUS_COLOR["stopped_early"], marker="x", ls="", mew=2, label="stopped here"))
    if best is not None:
        handles.append(Line2D([], [], color="black", lw=2.2, label=f"best: {trial_name(best)}"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch, {len(table)} trials")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_knobs(path: str, table: pd.DataFrame, metric_col: str, searched: Sequence[str], best: int | None) -> str:
    """Best metric of each trial against each searched knob (categories spread a little)."""
    k = len(searched)
    cols = min(3, k)
    rows = math.ceil(k / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    rng = np.random.default_rng(0)
    for ax, knob in zip(axes, searched):
        sub = table[table[knob].notna() & table[metric_col].notna()] if knob in table else table.iloc[:0]
        colors = [STATUS_COLOR.get(s, "grey") for s in sub["status"]]
        if _is_numeric(table[knob] if knob in table else pd.Series(dtype=float)):
            x = sub[knob].astype(float).to_numpy()
            if _log_scale(table[knob]):
                ax.set_xscale("log")
        else:  # categorical: one column per value, jittered so ties stay visible
            cats = sorted({str(v) for v in sub[knob]})
            x = np.array([cats.index(str(v)) for v in sub[knob]], float) + rng.uniform(-0.12, 0.12, len(sub))
            ax.set_xticks(range(len(cats)), cats, rotation=30 if len(cats) > 4 else 0)
        ax.scatter(x, sub[metric_col], c=colors, s=28, edgecolors="white", linewidths=0.5)
        is_best = (sub["trial"] == best).to_numpy() if best is not None else np.zeros(len(sub), bool)
        if is_best.any():
            ax.scatter(x[is_best], sub[metric_col][is_best], marker="*", s=180, c="black", zorder=3)
        ax.set(xlabel=knob, ylabel=metric_col, title=f"{knob} ({len(sub)} trials)")
        ax.grid(alpha=0.3)
    for ax in axes[k:]:
        ax.set_visible(False)
    fig.tight_layout()
    return _save(fig, path)


NA_POS = -0.1  # where a conditional knob that a trial did not use sits, so its line stays whole


def _axis_positions(values: pd.Series) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Map one knob to [0, 1] (log10 first for wide positive ranges); unset values to NA_POS."""
    pos, ticks = _positions(values)
    if np.isnan(pos).any():
        pos, ticks = np.where(np.isnan(pos), NA_POS, pos), ticks + [(NA_POS, "n/a")]
    return pos, ticks


def _positions(values: pd.Series) -> tuple[np.ndarray, list[tuple[float, str]]]:
    if _is_numeric(values):
        v = values.astype(float).to_numpy()
        log = _log_scale(values)
        t = np.log10(v) if log else v
        lo, hi = np.nanmin(t), np.nanmax(t)
        if hi == lo:  # one value: the middle of the axis
            return np.where(np.isnan(t), np.nan, 0.5), [(0.5, f"{np.nanmin(v):.3g}")]
        return (t - lo) / (hi - lo), [(0.0, f"{np.nanmin(v):.3g}"), (1.0, f"{np.nanmax(v):.3g}")]
    cats = sorted({str(x) for x in values.dropna()})
    step = 1.0 / (len(cats) - 1) if len(cats) > 1 else 0.0
    where = {c: (i * step if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
    pos = np.array([where[str(x)] if pd.notna(x) else np.nan for x in values], float)
    return pos, [(p, c) for c, p in where.items()]


def plot_parallel(path: str, table: pd.DataFrame, metric_col: str, mode: str, searched: Sequence[str]) -> str:
    """Parallel coordinates: one axis per knob plus the metric; brighter lines are better trials."""
    sub = table[table[metric_col].notna()].reset_index(drop=True)
    names = [k for k in searched if k in sub] + [metric_col]
    cols = [_axis_positions(sub[k]) for k in names]
    score = sub[metric_col].astype(float).to_numpy()
    lo, hi = np.nanmin(score) if len(score) else 0, np.nanmax(score) if len(score) else 1
    good = (score - lo) / (hi - lo) if hi > lo else np.full(len(score), 0.5)
    good = good if mode == "max" else 1 - good
    cmap = colormaps["viridis"]
    fig = Figure(figsize=(max(6, 1.8 * len(names)), 4.5))
    ax = fig.subplots()
    for i in np.argsort(good):  # best drawn last, on top
        y = [c[0][i] for c in cols]
        ax.plot(range(len(names)), y, color=cmap(good[i]), lw=1.6,
                ls="-" if sub.loc[i, "status"] == "completed" else "--", alpha=0.85)
    for j, (_, ticks) in enumerate(cols):
        ax.axvline(j, color="black", lw=0.8)
        for p, label in ticks:
            ax.text(j + 0.03, p, label, fontsize=7, va="center")
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_yticks([])
    ax.set_ylim(NA_POS - 0.05, 1.05)
    ax.set_title(f"searched knobs vs {metric_col} (dashed: not completed; yellow: best)")
    return _save(fig, path)


def plot_importance(path: str, importance: Mapping[str, float]) -> str:
    items = sorted(importance.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(6, 0.45 * len(items) + 1.4))
    ax = fig.subplots()
    ax.barh([k for k, _ in items], [v for _, v in items], color="C0")
    method = getattr(importance, "method", "")
    n = getattr(importance, "n_trials", 0)
    ax.set(xlabel="importance (sums to 1)", title=f"parameter importance{f' ({method}, {n} trials)' if method else ''}")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


# -- HTML -----------------------------------------------------------------------------------
def _img(path: str, alt: str) -> str:
    with open(path, "rb") as fh:
        data = base64.b64encode(fh.read()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


CSS = ("body{font-family:sans-serif;margin:2em;max-width:1200px}img{max-width:100%;border:1px solid #ddd}"
       "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
       ".completed{background:#eef5fb}.stopped_early{background:#fff4e6}.errored{background:#fdecea}")


def _table_html(table: pd.DataFrame) -> str:
    rows = ["<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns) + "</tr>"]
    for _, r in table.iterrows():
        cells = "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r)
        rows.append(f'<tr class="{html.escape(str(r.get("status", "")))}">{cells}</tr>')
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def write_report(out_dir: str, table: pd.DataFrame, histories: Mapping[int, pd.DataFrame], metric: str,
                 mode: str = "max", searched: Sequence[str] = (), importance: Mapping[str, float] | None = None,
                 title: str = "sweep report") -> dict[str, str]:
    """Write curves.png, knobs.png, parallel.png, importance.png (each when it has data) and
    report.html (all images embedded, no external links) into out_dir; return {name: path}."""
    os.makedirs(out_dir, exist_ok=True)
    metric_col = f"best_{metric}"
    table = table.copy()
    table.insert(0, "name", [trial_name(n, t) for n, t in zip(table.get("trial", [None] * len(table)),
                                                              table.get("trial_id", [""] * len(table)))])
    scored = table[table[metric_col].notna()] if metric_col in table else table.iloc[:0]
    best = None
    if len(scored):
        best_row = scored.loc[scored[metric_col].idxmax() if mode == "max" else scored[metric_col].idxmin()]
        best = int(best_row["trial"])
    searched = [k for k in searched if k in table]
    paths: dict[str, str] = {}
    paths["curves"] = plot_curves(os.path.join(out_dir, "curves.png"), table, histories, metric, best)
    if searched and len(scored):
        paths["knobs"] = plot_knobs(os.path.join(out_dir, "knobs.png"), table, metric_col, searched, best)
        paths["parallel"] = plot_parallel(os.path.join(out_dir, "parallel.png"), table, metric_col, mode, searched)
    if importance:
        paths["importance"] = plot_importance(os.path.join(out_dir, "importance.png"), importance)

    counts = table["status"].value_counts() if "status" in table else pd.Series(dtype=int)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>{len(table)} trials: " + ", ".join(f"{v} {html.escape(str(k)).replace('_', ' ')}"
                                                     for k, v in counts.items()) + ". "
             + (f"Best: <b>{trial_name(best)}</b>, {html.escape(metric_col)} = {best_row[metric_col]:.4g} "
                f"({'higher' if mode == 'max' else 'lower'} is better).</p>" if best is not None else "</p>")]
    captions = {"curves": f"Validation {metric} per epoch (x: trial stopped early)",
                "knobs": f"{metric_col} against each searched knob (star: best trial)",
                "parallel": "Parallel coordinates", "importance": "Parameter importance"}
    for name, path in paths.items():
        parts.append(f"<h2>{html.escape(captions[name])}</h2>\n{_img(path, captions[name])}")
    if importance is not None:
        reason = getattr(importance, "reason", "")
        if reason or not importance:
            parts.append(f"<p><i>importance: {html.escape(reason or 'not computed')}</i></p>")
    parts.append(f"<h2>Trials</h2>\n{_table_html(table)}")
    page = (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")
    paths["html"] = os.path.join(out_dir, "report.html")
    with open(paths["html"], "w", encoding="utf-8") as fh:
        fh.write(page)
    return paths
