"""Command line: `tuner run|validate|show SPACE.yaml`, `tuner resume SWEEP_DIR`, `tuner ui [SWEEP_DIR]`.

Every user mistake (YAML, data, options) ends in one line on stderr and exit code 2, before
anything is written. Ray, MLflow and torch load only for commands that need them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import yaml

from tuner.errors import TunerError


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in pairs:
        if "=" not in item:
            raise TunerError(f"--set {item}: expected key=value, e.g. --set search.samples=8")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise TunerError(f"--set {item}: value is not valid YAML") from None
    return out


def _overrides_of(args) -> dict[str, Any]:
    """--set pairs plus the shorthand flags, as dotted spec keys."""
    overrides = _overrides(args.set or [])
    for flag, key in (("samples", "search.samples"), ("concurrency", "search.concurrency"),
                      ("seed", "search.seed"), ("name", "name"), ("tracking_uri", "tracking.uri")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    return overrides


def _load_spec(args) -> Any:
    from tuner import spec as specmod

    spec = specmod.load(args.space, _overrides_of(args))
    if getattr(args, "max_epochs", None) is not None:
        spec = specmod.with_max_epochs(spec, args.max_epochs)
    if getattr(args, "smoke_test", False):
        spec = specmod.smoke(spec)
    return spec


def cmd_validate(args) -> int:
    spec = _load_spec(args)
    knobs = ", ".join(p.name for p in spec.space) or "none (fixed config)"
    print(f"{args.space}: ok - model {spec.model}, {spec.search.samples} samples, "
          f"max {spec.max_epochs()} epochs, searched: {knobs}")
    return 0


def _verbosity(args) -> int:
    return 0 if args.quiet else (2 if args.verbose else 1)


def _stop_on_sigterm() -> None:
    """SIGTERM stops a sweep like Ctrl+C: Ray Tune saves its state and `tuner resume` continues."""
    import os
    import signal

    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))


def _finish(sweep, spec, fn) -> int:
    try:
        res = fn()
    except sweep.Interrupted as e:
        print(f"tuner: interrupted; state saved. Resume with: tuner resume {e.sweep_dir}", file=sys.stderr)
        return 130
    except sweep.outcome.AllFailed as e:  # a result, not a crash: trials.csv says why each failed
        print(f"tuner: {e}", file=sys.stderr)
        return 1
    if isinstance(res, tuple):
        spec, res = res
    print(sweep.report(spec, res))
    return 0


def cmd_show(args) -> int:
    import dataclasses

    from tuner import config as cfgmod

    spec = _load_spec(args)
    entry = spec.model_entry()
    print(f"# {args.space}: model {spec.model} ({entry.config_cls.__module__}.Config)")
    print(f"metric: {spec.metric.name} ({spec.metric.mode})   data: "
          + (spec.data_path or f"synthetic {cfgmod.to_dict(spec.data.synthetic)}"))
    print(f"search: {cfgmod.to_dict(spec.search)}\nscheduler: {cfgmod.to_dict(spec.scheduler)} "
          f"(max {spec.max_epochs()} epochs)\nresources: {cfgmod.to_dict(spec.resources)}")
    print("\nknob                 source     value / range                          note")
    searched = {p.name: p for p in spec.space}
    for f in dataclasses.fields(entry.config_cls):
        if f.name in searched:
            p = searched[f.name]
            rng = (f"{list(p.choices)}" if p.type == "categorical"
                   else f"{p.type} [{p.low}, {p.high}]" + (" log" if p.log else "") + (f" step {p.step}" if p.step else ""))
            if p.when:
                rng += " when " + ", ".join(f"{k} in {list(v)}" for k, v in p.when)
            src, note = "searched", p.doc
        elif f.name in spec.fixed:
            src, rng, note = "fixed", repr(spec.fixed[f.name]), ""
        else:
            src, rng, note = "default", repr(f.default), ""
        note = note or f.metadata.get("doc", "")
        print(f"{f.name:<20} {src:<10} {rng:<38} {note}")
    return 0


def cmd_ui(args) -> int:
    import json
    import os
    import socket
    import subprocess

    from tuner.tracking import redact

    if args.run and os.path.isfile(os.path.join(args.run, "sweep.json")):
        with open(os.path.join(args.run, "sweep.json")) as fh:
            meta = json.load(fh)
        uri, link = meta["tracking_uri"], f"#/experiments/{meta['experiment_id']}/runs/{meta['parent_run_id']}"
    else:
        db = os.path.join(args.run or "runs", "mlflow.db")
        if not os.path.isfile(db):
            raise TunerError(f"{args.run or 'runs'}: no sweep folder (sweep.json) or mlflow.db here")
        uri, link = f"sqlite:///{os.path.abspath(db)}", ""
    if not uri.startswith("sqlite:"):
        print(f"this sweep logs to a tracking server: open {redact(uri)}/{link}")
        return 0
    port = args.port
    if port == 0:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    print(f"MLflow UI on {url}{link}  (Ctrl+C stops it)", flush=True)
    cmd = ["mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def cmd_analyze(args) -> int:
    from analysis.analyze import analyze, render

    print(render(analyze(args.run, tracking_uri=args.tracking_uri, out_dir=args.out)))
    return 0


def cmd_compare(args) -> int:
    from tuner import compare

    if len(args.files) > 2:
        raise TunerError("compare: give a claim file, one spec with --b overrides, or two specs")
    first = args.files[0]
    try:
        with open(first, encoding="utf-8") as fh:
            head = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError):
        head = None  # let the loaders below report it with file and line
    if isinstance(head, dict) and "claim" in head or (isinstance(head, dict) and {"a", "b", "spec"} <= set(head)):
        claim = compare.load_claim(first, smoke=args.smoke_test)
        if args.seeds and not args.smoke_test:
            import dataclasses

            claim = dataclasses.replace(claim, seeds=args.seeds)
    else:
        b_over = _overrides(args.b or [])
        if len(args.files) == 1 and not b_over:
            raise TunerError(f"compare {first}: give a second spec or --b key=value overrides for B")
        claim = compare.from_specs(first, args.files[1] if len(args.files) == 2 else None,
                                   args.seeds or 3, b_over, smoke=args.smoke_test)
    res = compare.run(claim, output=args.output, address=args.address, verbose=_verbosity(args),
                      concurrency=args.concurrency)
    if claim.claim:
        print(f"\n{claim.claim}")
    print(f"\n{res.markdown}\n\n{claim.seeds} seeds per side in {res.wall_seconds:.0f}s on {res.extra['dataset']}; "
          f"written to {res.out_dir}/compare.md; MLflow parent run {res.parent_run_id}")
    return 0


def cmd_run(args) -> int:
    spec = _load_spec(args)
    from tuner import sweep  # heavy imports only now that the spec is valid

    _stop_on_sigterm()
    source = {"spec_path": args.space, "overrides": _overrides_of(args), "smoke": bool(args.smoke_test),
              "max_epochs": args.max_epochs}
    return _finish(sweep, spec, lambda: sweep.run(spec, output=args.output, address=args.address,
                                                 verbose=_verbosity(args), source=source))


def cmd_resume(args) -> int:
    import os

    if not os.path.isdir(args.run):
        raise TunerError(f"{args.run}: no such sweep folder")
    from tuner import sweep

    _stop_on_sigterm()
    return _finish(sweep, None, lambda: sweep.resume(args.run, address=args.address, verbose=_verbosity(args)))


def verbosity_flags(sp: argparse.ArgumentParser) -> None:
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--quiet", action="store_true", help="only the final summary")
    g.add_argument("--verbose", action="store_true", help="Ray's per-trial output and worker logs too")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tuner", description="Measured hyperparameter sweeps for recommenders.")
    sub = p.add_subparsers(dest="command", required=True)

    def spec_args(sp):
        sp.add_argument("space", help="search-space YAML, e.g. search_spaces/bpr.yaml")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override any YAML field, e.g. --set search.samples=8 (repeatable)")
        sp.add_argument("--smoke-test", action="store_true", help="2 trials x 2 epochs on tiny synthetic data")

    r = sub.add_parser("run", help="run a sweep")
    spec_args(r)
    r.add_argument("--output", default="runs", help="output folder (default: runs)")
    r.add_argument("--samples", type=int, help="number of trials (search.samples)")
    r.add_argument("--concurrency", type=int, help="trials at once (search.concurrency)")
    r.add_argument("--seed", type=int, help="sampler seed (search.seed)")
    r.add_argument("--max-epochs", type=int, help="cap every trial at this many epochs (fixes `epochs`)")
    r.add_argument("--name", help="sweep name (MLflow experiment unless tracking.experiment is set)")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///OUTPUT/mlflow.db)")
    r.add_argument("--address", help="join a Ray cluster: auto, HOST:PORT or ray://HOST:10001")
    verbosity_flags(r)
    r.set_defaults(func=cmd_run)

    rs = sub.add_parser("resume", help="continue an interrupted sweep (same trials, study and MLflow runs)")
    rs.add_argument("run", help="the sweep folder `tuner run` printed, e.g. runs/bpr-20261124-090458")
    rs.add_argument("--address", help="join a Ray cluster: auto, HOST:PORT or ray://HOST:10001")
    verbosity_flags(rs)
    rs.set_defaults(func=cmd_resume)

    v = sub.add_parser("validate", help="check a search-space file without running it")
    spec_args(v)
    v.set_defaults(func=cmd_validate)

    an = sub.add_parser("analyze", help="trials table, importance, plots and HTML report of a finished sweep")
    an.add_argument("run", help="sweep folder, or MLflow parent run id (with --tracking-uri)")
    an.add_argument("--tracking-uri", help="default: the sweep's own, else sqlite:///runs/mlflow.db")
    an.add_argument("--out", help="output folder (default: RUN/analysis)")
    an.set_defaults(func=cmd_analyze)

    c = sub.add_parser("compare", help="A vs B over several seeds: paired difference, 95%% CI, verdict")
    c.add_argument("files", nargs="+", help="CLAIM.yaml | A.yaml B.yaml | BASE.yaml --b key=value")
    c.add_argument("--b", action="append", metavar="KEY=VALUE", help="B = BASE with these overrides")
    c.add_argument("--seeds", type=int, help="seeds per side (default: the claim's, else 3)")
    c.add_argument("--concurrency", type=int, help="trials at once (default: the spec's)")
    c.add_argument("--output", default="runs")
    c.add_argument("--address", help="join a Ray cluster")
    c.add_argument("--smoke-test", action="store_true", help="2 seeds x 2 epochs on tiny synthetic data")
    verbosity_flags(c)
    c.set_defaults(func=cmd_compare)

    sh = sub.add_parser("show", help="print the resolved space: every knob, its source, range and note")
    spec_args(sh)
    sh.set_defaults(func=cmd_show)

    u = sub.add_parser("ui", help="open the MLflow UI on 127.0.0.1 for a sweep folder or output folder")
    u.add_argument("run", nargs="?", help="sweep folder (default: the runs/ output folder)")
    u.add_argument("--port", type=int, default=5000, help="0 picks a free port (default 5000)")
    u.set_defaults(func=cmd_ui)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    args = parser().parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating initial MLflow database tables..."
    try:
        return args.func(args)
    except TunerError as e:
        print(f"tuner: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tuner: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
