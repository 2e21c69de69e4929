"""Command line: `tuner run|validate|show SPACE.yaml`, `tuner resume SWEEP_DIR`, `tuner ui [SWEEP_DIR]`.

Every user mistake (YAML, data, options) ends in one line on stderr and exit code 2, before
anything is written. Ray, MLflow and torch load only for commands that need them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from trainables import yamlio
from trainables.errors import TunerError, clamp, excerpt, redact
from tuner import provenance, recover

MAX_SET_VALUE = 64 * 1024  # a --set value is a word or a short list; the spec file has its own cap


def _overrides(pairs: Sequence[str], flag: str = "--set") -> dict[str, Any]:
    """`key=value` pairs, each value read by the spec file's strict YAML reader."""
    out = {}
    for item in pairs:
        if "=" not in item:
            raise TunerError(f"{flag} {excerpt(item)}: expected key=value, e.g. --set search.samples=8")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key or len(key) > 200 or not all(key.split(".")):
            raise TunerError(f"{flag} {excerpt(item)}: expected a dotted key such as search.samples before '='")
        if len(value) > MAX_SET_VALUE:
            raise TunerError(f"{flag} {key}: value longer than {MAX_SET_VALUE // 1024} KiB")
        out[key] = yamlio.parse_text(value, f"{flag} {key}")  # same duplicate / alias / depth checks
    return out


def _overrides_of(args) -> dict[str, Any]:
    """--set pairs plus the shorthand flags, as dotted spec keys."""
    overrides = _overrides(args.set or [])
    for flag, key in (("samples", "search.samples"), ("concurrency", "search.concurrency"),
                      ("seed", "search.seed"), ("name", "name"), ("tracking_uri", "tracking.uri"),
                      ("storage", "run.storage")):
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


def _check_output(path: str) -> None:
    """--output must be a folder we can create or write into: checked before anything is written."""
    from tuner.checks import folder_problem

    problem = folder_problem(path)
    if problem:
        raise TunerError(f"--output {excerpt(path)}: {problem}")


def _check_local_resources(spec, address: str | None) -> None:
    """Without a cluster address Ray starts here: a trial must fit on this machine."""
    if address or os.environ.get("RAY_ADDRESS"):
        return  # the cluster's size is known only once connected (the sweep checks it there)
    from tuner import spec as specmod

    try:
        import torch  # already loaded by the spec's metrics module: cheap

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001  a broken CUDA setup means no GPUs, not a crash
        gpus = 0
    specmod.check_resources(spec, float(os.cpu_count() or 1), float(gpus))


def _is_claim(path: str) -> bool:
    """A claim file (search_spaces/claims/*.yaml: a spec and two variants A and B), not a spec."""
    try:
        head = yamlio.parse_text(yamlio.read_text(path), path)
    except TunerError:
        return False  # let the loaders report it with file and line
    return isinstance(head, dict) and ("claim" in head or {"a", "b", "spec"} <= set(head))


def _load_claim(args):
    """The claim file `compare` would run: --set has no meaning there (each side sets its own keys)."""
    from tuner import compare

    if args.set:
        raise TunerError(f"{args.space}: a claim file; --set applies to spec files only (edit the claim's a/b sets)")
    return compare.load_claim(args.space, smoke=args.smoke_test)


def cmd_validate(args) -> int:
    if _is_claim(args.space):
        claim = _load_claim(args)
        print(f"{args.space}: ok - claim, {claim.seeds} seeds per side, metrics: {', '.join(claim.metrics)}")
        for side, v in (("A", claim.a), ("B", claim.b)):
            print(f"  {side} {v.name}: ok - model {v.spec.model}, {v.spec.max_epochs()} epochs, fixed: "
                  + (", ".join(f"{k}={fv}" for k, fv in v.spec.fixed.items()) or "-"))
        return 0
    spec = _load_spec(args)
    knobs = ", ".join(p.name for p in spec.space) or "none (fixed config)"
    print(f"{args.space}: ok - model {spec.model}, {spec.search.samples} samples, "
          f"max {spec.max_epochs()} epochs, searched: {knobs}")
    return 0


def _verbosity(args) -> int:
    return 0 if args.quiet else (2 if args.verbose else 1)


def _finish(sweep, spec, fn, quiet: bool = False) -> int:
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
    print(sweep.report(spec, res, compact=quiet))
    return 0


def cmd_show(args) -> int:
    if not _is_claim(args.space):
        return _show(_load_spec(args), args.space)
    claim = _load_claim(args)
    if claim.claim:
        print(f"# claim: {claim.claim}")
    for side, v in (("A", claim.a), ("B", claim.b)):
        print(f"\n## {side}: {v.name}")
        _show(v.spec, f"{args.space} ({side})")
    return 0


def _show(spec, label: str) -> int:
    import dataclasses

    from trainables import config as cfgmod

    entry = spec.model_entry()
    print(f"# {label}: model {spec.model} ({entry.config_cls.__module__}.Config)")
    print(f"metric: {spec.metric.name} ({spec.metric.mode})   data: "
          + (spec.data_path or f"synthetic {cfgmod.to_dict(spec.data.synthetic)}"))
    search = {**cfgmod.to_dict(spec.search), "storage": redact(spec.search.storage) if spec.search.storage else None}
    print(f"search: {search}\nscheduler: {cfgmod.to_dict(spec.scheduler)} (max {spec.max_epochs()} epochs)\n"
          f"resources: {cfgmod.to_dict(spec.resources)}   run: {cfgmod.to_dict(spec.run)}")
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
    from tuner import ui

    return ui.serve(*ui.target(args.run), args.port)


def cmd_analyze(args) -> int:
    from tuner.analyze import analyze, render

    print(render(analyze(args.run, tracking_uri=args.tracking_uri, out_dir=args.out)))
    return 0


def cmd_compare(args) -> int:
    from tuner import compare

    _check_output(args.output)
    if len(args.files) > 2:
        raise TunerError("compare: give a claim file, one spec with --b overrides, or two specs")
    first = args.files[0]
    if _is_claim(first):
        claim = compare.load_claim(first, smoke=args.smoke_test)
        if args.seeds and not args.smoke_test:
            import dataclasses

            claim = dataclasses.replace(claim, seeds=args.seeds)
    else:
        b_over = _overrides(args.b or [], flag="--b")
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
    _check_output(args.output)
    _check_local_resources(spec, args.address)
    from tuner import sweep  # heavy imports only now that the spec is valid

    recover.sigterm_as_sigint()
    source = {"spec_path": args.space, "overrides": _overrides_of(args), "smoke": bool(args.smoke_test),
              "max_epochs": args.max_epochs}
    return _finish(sweep, spec, lambda: sweep.run(spec, output=args.output, address=args.address,
                                                 verbose=_verbosity(args), source=source), args.quiet)


def cmd_resume(args) -> int:
    from tuner.sweepdir import read_sweep_meta

    if not os.path.isdir(args.run):
        raise TunerError(f"{args.run}: no such sweep folder")
    read_sweep_meta(args.run)  # a broken sweep.json fails here, before Ray and MLflow load
    if args.storage is not None:
        from tuner.checks import describe_uri, storage_problem

        problem = storage_problem(args.storage)
        if problem:
            raise TunerError(f"--storage {describe_uri(args.storage)}: {problem}")
    from tuner import sweep

    recover.sigterm_as_sigint()
    return _finish(sweep, None, lambda: sweep.resume(args.run, address=args.address, verbose=_verbosity(args),
                                                     run_storage=args.storage), args.quiet)


def ray_flags(sp: argparse.ArgumentParser) -> None:
    """--address and the verbosity flags: every command that starts or joins Ray takes them."""
    sp.add_argument("--address", help="join a Ray cluster: auto, HOST:PORT or ray://HOST:10001")
    verbosity_flags(sp)


def verbosity_flags(sp: argparse.ArgumentParser) -> None:
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--quiet", action="store_true", help="only the final summary")
    g.add_argument("--verbose", action="store_true", help="Ray's per-trial output and worker logs too")


def _port(text: str) -> int:
    """argparse type: a TCP port, 0..65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {excerpt(text)}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {port}")
    return port


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line too (argparse prints the whole usage block first); exit code 2."""

    def error(self, message: str):
        self.exit(2, clamp(f"{self.prog}: error: {message} (see {self.prog} --help)") + "\n")


def spec_args(sp: argparse.ArgumentParser) -> None:
    """The arguments of every command that reads one spec file (run, validate, show)."""
    sp.add_argument("space", help="search-space YAML, e.g. search_spaces/bpr.yaml")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override any YAML field, e.g. --set search.samples=8 (repeatable)")
    sp.add_argument("--smoke-test", action="store_true",
                    help="2 trials x 2 epochs on tiny synthetic data, or on 300 users of the spec's data file")


def _arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return flags, kwargs


def _command(sub, name: str, about: str, func, *args, spec: bool = False, ray: bool = False) -> None:
    """One sub-command: the spec file's arguments first (spec), then `args`, then Ray's flags (ray)."""
    sp = sub.add_parser(name, help=about)
    if spec:
        spec_args(sp)
    for flags, kwargs in args:
        sp.add_argument(*flags, **kwargs)
    if ray:
        ray_flags(sp)
    sp.set_defaults(func=func)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tuner", description="Measured hyperparameter sweeps for recommenders.")
    p.add_argument("--version", action="version", version=f"tuner {provenance.version()}")
    sub = p.add_subparsers(dest="command", required=True)
    _command(sub, "run", "run a sweep", cmd_run,
             _arg("--output", default="runs", help="output folder (default: runs)"),
             _arg("--samples", type=int, help="number of trials (search.samples)"),
             _arg("--concurrency", type=int, help="trials at once (search.concurrency)"),
             _arg("--seed", type=int, help="sampler seed (search.seed)"),
             _arg("--max-epochs", type=int, help="cap every trial at this many epochs (fixes `epochs`)"),
             _arg("--name", help="sweep name (MLflow experiment unless tracking.experiment is set)"),
             _arg("--tracking-uri", help="MLflow tracking URI (default: sqlite:///OUTPUT/mlflow.db)"),
             _arg("--storage", help="where Ray Tune keeps state and checkpoints: a folder or s3://BUCKET/PREFIX "
                                    "(run.storage; default: SWEEP_DIR/ray)"), spec=True, ray=True)
    _command(sub, "resume", "continue an interrupted sweep (same trials, study and MLflow runs)", cmd_resume,
             _arg("run", help="the sweep folder `tuner run` printed, e.g. runs/bpr-20261124-090458"),
             _arg("--storage", help="the run storage URI, when it differs from the one in SWEEP_DIR/sweep.json"),
             ray=True)
    _command(sub, "validate", "check a search-space file without running it", cmd_validate, spec=True)
    _command(sub, "analyze", "trials table, importance, plots and HTML report of a finished sweep", cmd_analyze,
             _arg("run", help="sweep folder, or MLflow parent run id (with --tracking-uri)"),
             _arg("--tracking-uri", help="default: the sweep's own, else sqlite:///runs/mlflow.db"),
             _arg("--out", help="output folder (default: RUN/analysis)"))
    _command(sub, "compare", "A vs B over several seeds: paired difference, 95%% CI, verdict", cmd_compare,
             _arg("files", nargs="+", help="CLAIM.yaml | A.yaml B.yaml | BASE.yaml --b key=value"),
             _arg("--b", action="append", metavar="KEY=VALUE", help="B = BASE with these overrides"),
             _arg("--seeds", type=int, help="seeds per side (default: the claim's, else 3)"),
             _arg("--concurrency", type=int, help="trials at once (default: the spec's)"),
             _arg("--output", default="runs"),
             _arg("--smoke-test", action="store_true", help="2 seeds x 2 epochs on tiny synthetic data"), ray=True)
    _command(sub, "show", "print the resolved space: every knob, its source, range and note", cmd_show, spec=True)
    _command(sub, "ui", "open the MLflow UI on 127.0.0.1 for a sweep folder or output folder", cmd_ui,
             _arg("run", nargs="?", help="sweep folder (default: the runs/ output folder)"),
             _arg("--port", type=_port, default=5000, help="0 picks a free port (default 5000)"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # usage error (one line, see _Parser) or --help: a code, as for other errors
        return e.code if isinstance(e.code, int) else 2
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating initial MLflow database tables..."
    try:
        return args.func(args)
    except TunerError as e:
        print(clamp(f"tuner: error: {e}"), file=sys.stderr)
        if getattr(e, "exit_now", False):  # e.g. a thread still blocked in Ray: nothing to clean up, yet
            sys.stderr.flush()
            os._exit(2)
        return 2
    except KeyboardInterrupt:
        print("tuner: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tuner show x.yaml | head`: the reader left; as the shell's own tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
    except Exception as e:  # noqa: BLE001  a bug of ours: still one line, the traceback on demand
        if os.environ.get("TUNER_DEBUG") == "1":
            raise
        first = (str(e).splitlines() or [""])[0]
        print(clamp(f"tuner: internal error: {type(e).__name__}: {first[:160]} (TUNER_DEBUG=1 shows the traceback)"),
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
