"""The experiment spec: one YAML file -> one frozen, typed `Spec`, validated before anything runs.

Layout of a file (every section but `model` is optional; defaults live in the dataclasses of tuner/sections.py):

    name: bpr-mf
    model: bpr_mf                 # a key of trainables.MODELS
    metric: {name: val_ndcg_10, mode: max}
    data: {source: synthetic, synthetic: {n_users: 3000}}   # or {path: ..., format: auto}
    eval: {ks: [10, 20]}
    fixed: {loss: bpr}            # model knobs held constant
    space:                        # model knobs searched, in Optuna's vocabulary
      lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
      num_negatives: {type: int, low: 1, high: 8, when: {loss: bpr}}
    search: {samples: 16, concurrency: 2, seed: 0, algo: tpe}
    scheduler: {type: asha, grace_period: 2, reduction_factor: 3, brackets: 1}   # or asha_promote, fifo
    resources: {cpu: 1, gpu: 0}
    tracking: {uri: null, experiment: null}
    run: {max_failures: 0}
    diagnose: {stuck_epochs: 3, ...}   # pathology stopper (analysis/diagnose.py); enabled: false turns it off
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping

import yaml

from analysis.diagnose import DiagnoseConfig
from trainables import config as cfgmod
from trainables import yamlio
from tuner.checks import describe_uri, rdb_problem, storage_problem, uri_problem
from trainables.errors import TunerError, excerpt, where
# the sections' dataclasses and the operations on a Spec live beside this module; tuner.spec is their public name
from tuner.sections import (MAX_SEED, SMOKE_USERS, DataSpec, EvalSpec, MetricSpec, Param, ResourcesSpec,  # noqa: F401
                            RunSpec, SchedulerSpec, SearchSpec, Spec, SyntheticSpec, TrackingSpec, _RawParam)
from tuner.specops import check_resources, dump_fixed, smoke, with_max_epochs  # noqa: F401

# Upper bounds: each a generous multiple of any real use, low enough that a typo (1e23 samples,
# a billion items) fails here, in one line, instead of as a MemoryError or a hang after Ray started.
MAX_NAME = 64  # the sweep name becomes folder, MLflow experiment and Optuna study names
MAX_K = 10_000  # eval cut-offs
MAX_SYNTHETIC_CELLS = 50_000_000  # n_users x n_items: the generator holds a few float [U, N] arrays
# model knobs (by name suffix) whose size sets memory or time; the models' Config leaves them open above
KNOB_CAPS = (("epochs", 10_000), ("batch_size", 1 << 20), ("dim", 1 << 16), ("maxlen", 100_000),
             ("negatives", 100_000), ("n_heads", 1024), ("n_blocks", 1024))

_TOP_KEYS = {f.name for f in dataclasses.fields(Spec)} - {"path"}


def _line_map(text: str) -> dict[str, int]:
    """Dotted key -> 1-based line, from the YAML node tree (for error messages)."""
    out: dict[str, int] = {}
    root = yamlio.compose(text)  # no aliases, bounded depth: the walk below is linear in the text

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}{k.value}"
                out[key] = k.start_mark.line + 1
                walk(v, key + ".")
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                out[f"{prefix.rstrip('.')}[{i}]"] = v.start_mark.line + 1
                walk(v, f"{prefix.rstrip('.')}[{i}].")

    walk(root, "")
    return out


def load(path: str, overrides: Mapping[str, Any] | None = None) -> Spec:
    """Read and validate a spec file. `overrides` are dotted keys (from `--set`) applied first."""
    text = yamlio.read_text(path)  # regular files only, at most 1 MiB, strict UTF-8
    raw = yamlio.parse_text(text, path)  # no duplicate keys, anchors or aliases
    lines = _line_map(text)
    for key, value in (overrides or {}).items():
        raw = _set_dotted(raw if isinstance(raw, dict) else {}, key, value)
    return parse(raw, path, line_of=lines.get)


def _set_dotted(raw: dict, key: str, value: Any) -> dict:
    raw = dict(raw)
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        child = node.get(p)
        child = dict(child) if isinstance(child, dict) else {}
        node[p] = child
        node = child
    node[parts[-1]] = value
    return raw


def parse(raw: Any, path: str = "<spec>", line_of=lambda k: None) -> Spec:
    """Validate a loaded YAML mapping into a Spec (see module docstring for the layout)."""
    from trainables import MODELS

    if not isinstance(raw, Mapping):
        raise TunerError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    for k in raw:
        if k not in _TOP_KEYS:
            raise TunerError(
                f"{where(path, str(k), line_of(str(k)))}: unknown key; valid keys: {', '.join(sorted(_TOP_KEYS))}"
            )
    if "model" not in raw:
        raise TunerError(f"{path}: model: missing; valid models: {', '.join(MODELS)}")
    model = raw["model"]
    if not isinstance(model, str) or model not in MODELS:
        raise TunerError(
            f"{where(path, 'model', line_of('model'))}: unknown model {excerpt(model)}; valid: {', '.join(MODELS)}"
        )
    entry = MODELS[model]

    def section(cls, key, nested=None):
        return cfgmod.build(cls, raw.get(key), file=path, prefix=f"{key}.", line_of=line_of, nested=nested)

    data = section(
        DataSpec,
        "data",
        nested={
            "synthetic": lambda r, p: cfgmod.build(SyntheticSpec, r, file=path, prefix=p, line_of=line_of)
        },
    )
    name = raw.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise TunerError(f"{where(path, 'name', line_of('name'))}: use letters, digits, '-' and '_' only")
    if len(name) > MAX_NAME:
        raise TunerError(f"{where(path, 'name', line_of('name'))}: at most {MAX_NAME} characters, got {len(name)}")
    spec = Spec(
        path=path,
        name=name,
        model=model,
        metric=section(MetricSpec, "metric"),
        data=data,
        eval=section(EvalSpec, "eval"),
        fixed=_parse_fixed(raw.get("fixed"), entry.config_cls, path, line_of),
        space=_parse_space(raw.get("space"), entry.config_cls, raw.get("fixed") or {}, path, line_of),
        search=section(SearchSpec, "search"),
        scheduler=section(SchedulerSpec, "scheduler"),
        resources=section(ResourcesSpec, "resources"),
        tracking=section(TrackingSpec, "tracking"),
        run=section(RunSpec, "run"),
        diagnose=section(DiagnoseConfig, "diagnose"),
    )
    _check_bounds(spec, line_of)
    _check_cross(spec, line_of)
    return spec


def _check_bounds(spec: Spec, line_of) -> None:
    """Sizes no single field's bounds can express: products, lists, model knobs, the tracking URI."""
    path = spec.path
    if len(spec.eval.ks) > 32 or any(k > MAX_K for k in spec.eval.ks):
        raise TunerError(f"{where(path, 'eval.ks', line_of('eval.ks'))}: at most 32 cut-offs, each <= {MAX_K}")
    syn = spec.data.synthetic
    if spec.data.source == "synthetic" and syn.n_users * syn.n_items > MAX_SYNTHETIC_CELLS:
        key = "data.synthetic.n_items"
        raise TunerError(f"{where(path, key, line_of(key) or line_of('data.synthetic'))}: n_users x n_items = "
                         f"{syn.n_users * syn.n_items:,} exceeds {MAX_SYNTHETIC_CELLS:,} (the generator's memory)")
    for name, value in spec.fixed.items():
        _check_knob_cap(name, (value,), f"fixed.{name}", path, line_of)
    for p in spec.space:
        values, sub = (p.choices, "choices") if p.type == "categorical" else ((p.high,), "high")
        _check_knob_cap(p.name, values, f"space.{p.name}.{sub}", path, line_of)
    for key, uri, check in (("tracking.uri", spec.tracking.uri, uri_problem),
                            ("search.storage", spec.search.storage, rdb_problem),
                            ("run.storage", spec.run.storage, storage_problem)):
        problem = check(uri) if uri is not None else None
        if problem:
            raise TunerError(f"{where(path, key, line_of(key))}: {describe_uri(uri)}: {problem}")


def _check_knob_cap(name: str, values, key: str, path: str, line_of) -> None:
    cap = next((c for suffix, c in KNOB_CAPS if name.endswith(suffix)), None)
    for v in values:
        if cap is not None and isinstance(v, (int, float)) and not isinstance(v, bool) and v > cap:
            raise TunerError(f"{where(path, key, line_of(key))}: at most {cap:,} for {name}, got {cfgmod.short_number(v)}")


def _parse_fixed(raw: Any, config_cls: type, path: str, line_of) -> dict[str, Any]:
    if raw is None:
        return {}
    raw = cfgmod.resolve_aliases(config_cls, raw, path, "fixed.", line_of)  # old knob names: one stderr line
    cfg = cfgmod.build(config_cls, raw, file=path, prefix="fixed.", line_of=line_of)
    return {k: getattr(cfg, k) for k in raw}


def _parse_space(raw: Any, config_cls: type, fixed: Mapping, path: str, line_of) -> tuple[Param, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise TunerError(f"{where(path, 'space', line_of('space'))}: expected a mapping of knobs")
    raw = cfgmod.resolve_aliases(config_cls, raw, path, "space.", line_of)
    fixed = cfgmod.resolve_aliases(config_cls, fixed, path, "fixed.", line_of)
    fields = cfgmod.fields_of(config_cls)
    params: list[Param] = []
    seen: dict[str, Param] = {}
    for name, body in raw.items():
        key = f"space.{name}"
        loc = where(path, key, line_of(key))
        if name not in fields:
            raise TunerError(f"{loc}: unknown knob; valid: {', '.join(fields)}")
        if name in fixed:
            raise TunerError(f"{loc}: also set in fixed; a knob is either fixed or searched")
        rp = cfgmod.build(_RawParam, body, file=path, prefix=f"{key}.", line_of=line_of)
        f, tp = fields[name]
        p = _check_param(name, rp, f, tp, path, line_of)
        p = dataclasses.replace(p, when=_parse_when(name, rp.when, seen, fixed, path, line_of, fields))
        params.append(p)
        seen[name] = p
    return tuple(params)


def _check_param(name: str, rp: _RawParam, f, tp, path: str, line_of) -> Param:
    key = f"space.{name}"

    def err(sub: str, msg: str) -> TunerError:
        k = f"{key}.{sub}" if sub else key
        return TunerError(f"{where(path, k, line_of(k) or line_of(key))}: {msg}")

    if rp.type == "categorical":
        if rp.choices is None or len(rp.choices) == 0:
            raise err("choices", "categorical knob needs a non-empty 'choices' list")
        for extra in ("low", "high", "step"):
            if getattr(rp, extra) is not None:
                raise err(extra, "not allowed with type categorical (use choices)")
        if rp.log:
            raise err("log", "not allowed with type categorical (log applies to float and int)")
        choices = tuple(cfgmod.cast(c, tp, f"{key}.choices[{i}]", path, line_of) for i, c in enumerate(rp.choices))
        for i, c in enumerate(choices):
            cfgmod.check_field(f, c, f"{key}.choices[{i}]", path, line_of)
        if len(set(map(repr, choices))) != len(choices):
            raise err("choices", "duplicate choices")
        return Param(name, "categorical", choices=choices, doc=rp.doc)
    # numeric
    base = _numeric_base(tp)
    if base is None:
        raise err("type", f"knob {name} is not numeric; use type: categorical")
    if rp.type == "float" and base is int:
        raise err("type", f"knob {name} is an integer; use type: int")
    if rp.choices is not None:
        raise err("choices", f"not allowed with type {rp.type} (use low/high)")
    if rp.low is None or rp.high is None:
        raise err("low" if rp.low is None else "high", f"type {rp.type} needs both low and high")
    low, high = rp.low, rp.high
    if rp.type == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise err("low", "int knob needs integer low and high")
    if low > high:
        raise err("low", f"low > high ({low} > {high})")
    if rp.log and low <= 0:
        raise err("low", f"log scale needs low > 0, got {low}")
    if rp.log and rp.step is not None:
        raise err("step", "step cannot be combined with log: true (Optuna forbids it)")
    if rp.step is not None and rp.step <= 0:
        raise err("step", f"step must be > 0, got {rp.step}")
    if rp.type == "int" and rp.step is not None and not float(rp.step).is_integer():
        raise err("step", f"int knob needs an integer step, got {rp.step}")
    for sub, v in (("low", low), ("high", high)):
        cfgmod.check_field(f, int(v) if base is int else v, f"{key}.{sub}", path, line_of)
    if rp.type == "int":
        low, high = int(low), int(high)
    return Param(name, rp.type, low=low, high=high, log=rp.log, step=rp.step, doc=rp.doc)


def _numeric_base(tp) -> type | None:
    import typing

    if tp in (int, float):
        return tp
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 and args[0] in (int, float) else None


def _parse_when(name, raw, seen: Mapping[str, Param], fixed: Mapping, path, line_of, fields=None):
    if not raw:
        return ()
    key = f"space.{name}.when"
    out = []
    for ref, values in raw.items():
        loc = where(path, f"{key}.{ref}", line_of(f"{key}.{ref}") or line_of(key))
        vals = tuple(values) if isinstance(values, list) else (values,)
        if fields and ref in fields:
            # cast like the knob itself, so `1e-3` (a string to PyYAML) matches the float choice 0.001
            vals = tuple(_cast_or_keep(v, fields[ref][1]) for v in vals)
        if ref in seen:
            p = seen[ref]
            if p.type != "categorical":
                raise TunerError(f"{loc}: can only depend on a categorical knob; {ref} is {p.type}")
            bad = [v for v in vals if v not in p.choices]
            if bad:
                raise TunerError(
                    f"{loc}: {excerpt(bad[0])} is never sampled; {ref} choices: {', '.join(map(str, p.choices))}"
                )
        elif ref in fixed:
            # a condition on a fixed value is static; allowed (e.g. in a best-config file) if it can hold
            fv = fixed[ref]
            if fields and ref in fields:
                fv = _cast_or_keep(fv, fields[ref][1])
            if fv not in vals:
                raise TunerError(f"{loc}: never holds: {ref} is fixed to {excerpt(fv)}, so {name} would never be sampled")
        else:
            raise TunerError(
                f"{loc}: refers to {excerpt(ref)}, which is not a categorical knob listed before {name} in space"
            )
        out.append((ref, vals))
    return tuple(out)


def _cast_or_keep(value: Any, tp: Any) -> Any:
    try:
        return cfgmod.cast(value, tp, "")
    except (TunerError, TypeError):
        return value


TPE_KNOBS = ("n_startup_trials", "multivariate", "group", "constant_liar", "paused_as_pruned", "largest_rung",
             "random_fraction", "gamma")  # SearchSpec fields the TPE sampler reads


def _check_tpe(spec: Spec, line_of) -> None:
    """TPE's options only with algo tpe (a value that did nothing is never logged); group needs multivariate."""
    default = SearchSpec()
    for knob in TPE_KNOBS:
        if spec.search.algo != "tpe" and getattr(spec.search, knob) != getattr(default, knob):
            key = f"search.{knob}"
            raise TunerError(f"{where(spec.path, key, line_of(key))}: a TPE option; algo is {spec.search.algo}")
    if spec.search.group and not spec.search.multivariate:
        key = "search.group"
        raise TunerError(f"{where(spec.path, key, line_of(key))}: group needs multivariate: true (Optuna's TPE "
                         "groups the joint density of multivariate TPE)")


def _check_cross(spec: Spec, line_of) -> None:
    path = spec.path
    names = {p.name for p in spec.space}
    # metric: one the model reports, e.g. val_<hr|ndcg|mrr>_<k> with k in eval.ks, or train_loss
    if any(k < 1 for k in spec.eval.ks) or not spec.eval.ks:
        raise TunerError(f"{where(path, 'eval.ks', line_of('eval.ks'))}: needs positive cut-offs, e.g. [10, 20]")
    m = spec.metric.name
    valid = spec.model_entry().metric_names(spec.eval.ks)
    if m not in valid:
        raise TunerError(
            f"{where(path, 'metric.name', line_of('metric.name'))}: unknown metric {excerpt(m)}; valid: {', '.join(valid)}"
        )
    if spec.data.source == "file":
        if not spec.data.path:
            raise TunerError(f"{where(path, 'data.path', line_of('data'))}: source: file needs a path")
    elif spec.data.path:
        raise TunerError(
            f"{where(path, 'data.path', line_of('data.path'))}: set data.source: file to read a path"
        )
    for attr, key in ((spec.data_path, "data.path"), (spec.resolve(spec.data.item_attributes), "data.item_attributes")):
        if attr is not None and not os.path.isfile(attr):
            what = "not a regular file" if os.path.exists(attr) else "no such file"  # /dev/urandom, a FIFO
            raise TunerError(f"{where(path, key, line_of(key))}: {what}: {attr}")
        if attr is not None and not os.access(attr, os.R_OK):
            raise TunerError(f"{where(path, key, line_of(key))}: file is not readable: {attr}")
    if spec.search.concurrency > spec.search.samples:
        pass  # harmless: Ray runs at most `samples` trials
    if spec.scheduler.type != "fifo" and spec.scheduler.grace_period > spec.max_epochs():
        raise TunerError(
            f"{where(path, 'scheduler.grace_period', line_of('scheduler.grace_period'))}: "
            f"grace_period {spec.scheduler.grace_period} exceeds the most epochs a trial runs ({spec.max_epochs()})"
        )
    n_rungs = len(spec.rungs())
    if spec.scheduler.brackets > 1 and (spec.scheduler.type == "fifo" or spec.scheduler.brackets > n_rungs):
        raise TunerError(
            f"{where(path, 'scheduler.brackets', line_of('scheduler.brackets'))}: {spec.scheduler.brackets} brackets "
            f"need as many rungs; this schedule has {n_rungs} ({spec.scheduler.type}, rungs at epochs "
            f"{', '.join(map(str, spec.rungs())) or 'none'})")
    if spec.scheduler.type == "asha_promote" and not names:
        # without a searcher Ray's own generator counts paused trials against the concurrency: they would
        # hold every slot while waiting for trials it never starts (and the trials would be identical anyway)
        raise TunerError(f"{where(path, 'scheduler.type', line_of('scheduler.type'))}: asha_promote compares the "
                         "configs of a searched space; this spec has no `space` (use asha or fifo)")
    _check_tpe(spec, line_of)
    if spec.search.algo == "tpe" and not names and spec.search.samples > 1:
        pass  # no search space: the sweep repeats the fixed config (e.g. a best-config file)
    # the model's own cross-field checks (e.g. loss x similarity combinations) on the default point
    entry = spec.model_entry()
    if entry.validate is not None:
        point = {**spec.fixed}
        for p in spec.space:
            if not p.when:
                point.setdefault(p.name, p.choices[0] if p.type == "categorical" else p.low)
        try:
            entry.make_config(point)  # builds the point's Config once and runs entry.validate on it
        except TunerError as e:
            raise TunerError(f"{path}: {e}") from None
    if math.isnan(spec.resources.cpu):
        raise TunerError(f"{path}: resources.cpu must be a number")
