"""Command line: `tuner run SPACE.yaml`, `tuner resume SWEEP_DIR`, `tuner validate SPACE.yaml`.

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
    if isinstance(res, tuple):
        spec, res = res
    print(sweep.report(spec, res))
    return 0


def cmd_run(args) -> int:
    spec = _load_spec(args)
    from tuner import sweep  # heavy imports only now that the spec is valid

    _stop_on_sigterm()
    source = {"spec_path": args.space, "overrides": _overrides_of(args), "smoke": bool(args.smoke_test)}
    return _finish(sweep, spec, lambda: sweep.run(spec, output=args.output, address=args.address,
                                                 verbose=_verbosity(args), source=source))


def cmd_resume(args) -> int:
    import os

    if not os.path.isdir(args.run):
        raise TunerError(f"{args.run}: no such sweep folder")
    from tuner import sweep

    _stop_on_sigterm()
    return _finish(sweep, None, lambda: sweep.resume(args.run, address=args.address, verbose=_verbosity(args)))


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
    r.add_argument("--name", help="sweep name (MLflow experiment unless tracking.experiment is set)")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///OUTPUT/mlflow.db)")
    r.add_argument("--address", help="join a Ray cluster: auto, HOST:PORT or ray://HOST:10001")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--quiet", action="store_true", help="only the final summary")
    g.add_argument("--verbose", action="store_true", help="Ray's per-trial output and worker logs too")
    r.set_defaults(func=cmd_run)

    rs = sub.add_parser("resume", help="continue an interrupted sweep (same trials, study and MLflow runs)")
    rs.add_argument("run", help="the sweep folder `tuner run` printed, e.g. runs/bpr-20261124-090458")
    rs.add_argument("--address", help="join a Ray cluster: auto, HOST:PORT or ray://HOST:10001")
    g = rs.add_mutually_exclusive_group()
    g.add_argument("--quiet", action="store_true", help="only the final summary")
    g.add_argument("--verbose", action="store_true", help="Ray's per-trial output and worker logs too")
    rs.set_defaults(func=cmd_resume)

    v = sub.add_parser("validate", help="check a search-space file without running it")
    spec_args(v)
    v.set_defaults(func=cmd_validate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
