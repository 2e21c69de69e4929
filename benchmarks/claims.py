"""Run every claim in search_spaces/claims/ and write docs/claims.md (verdicts with 95% CIs).

    python benchmarks/claims.py                      # all claims on their specs' default data
    python benchmarks/claims.py --beauty 002_bpr_vs_ce 003_popularity_negatives   # also on Beauty
    python benchmarks/claims.py --smoke-test         # 2 seeds x 2 epochs each, tiny data
    python benchmarks/claims.py --real 004_encoder_weight 004_smoothl1   # real data, per-side tuned lr
    python benchmarks/claims.py --real --smoke-test  # the same path on tiny budgets (CI)
    python benchmarks/claims.py --real --gpu 0.1 --data beauty 003_popularity_negatives   # 10 runs at once on a GPU

--real (benchmarks/claims_real.py): seed 004 on the UCI Multiple Features digits (benchmarks/uci_mfeat.py),
the recommender claims on Amazon Beauty and the sequence claims (003) on LastFM too (skipped when
../shared/data is absent; `--data lastfm` runs only that one); each side first gets
its own learning rate from a short lr-only search, then >= 5 seeds per side with early stopping. The
result table goes to the top of docs/claims.md, above the synthetic sections.

Each claim is `tuner compare search_spaces/claims/<claim>.yaml`; this script only loops and collects.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # claims_real, uci_mfeat beside this file
import claims_real  # noqa: E402
import uci_mfeat  # noqa: E402

ROOT = os.path.dirname(HERE)
BEAUTY = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "s3rec", "Beauty.txt"))
LASTFM = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "s3rec", "LastFM.txt"))
ATTRS = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "s3rec", "Beauty_item2attributes.json"))


def on_beauty(claim, epochs: int | None):
    """The same claim with data.path = Beauty (and its attributes for content-aware models)."""
    from tuner import compare
    from tuner import spec as specmod

    def move(v):
        over = {"data.source": "file", "data.path": BEAUTY}
        spec = specmod.load(v.spec.path, {"space": {}, **{f"fixed.{k}": x for k, x in v.spec.fixed.items()}, **over})
        if spec.model == "multimodal":
            spec = specmod.load(v.spec.path, {"space": {}, **{f"fixed.{k}": x for k, x in v.spec.fixed.items()},
                                              **over, "data.item_attributes": ATTRS})
        if epochs:
            spec = spec.replace(fixed={**spec.fixed, "epochs": epochs})
        return compare.Variant(v.name, spec)

    return dataclasses.replace(claim, a=move(claim.a), b=move(claim.b))


def real(chosen: list[str], args) -> int:
    """--real: per-side lr search, then the compare on real data; the table on top of docs/claims.md."""
    import subprocess

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"claims.py --real: {load}", flush=True)
    from trainables.errors import TunerError

    def write(results):  # after each claim: an interrupted run keeps what it finished
        if not args.smoke_test:
            claims_real.write_doc(args.out, results, load.split("load average:")[-1].strip())
            print(f"wrote {args.out}", flush=True)

    try:
        claims_real.run_all(chosen, smoke=args.smoke_test, output=os.path.join(ROOT, "runs"),
                            data={"beauty": BEAUTY, "lastfm": LASTFM}, attrs=ATTRS,
                            only=tuple(args.data or ()), on_result=write, gpu=args.gpu)
    except (TunerError, uci_mfeat.PrepError) as e:
        print(f"claims.py: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("claims", nargs="*", help="claim names (default: all)")
    ap.add_argument("--beauty", nargs="*", default=[], help="claims to also run on Amazon Beauty")
    ap.add_argument("--beauty-epochs", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--real", action="store_true", help="run on real data (UCI mfeat / Amazon Beauty) at "
                                                        "per-side tuned learning rates")
    ap.add_argument("--data", action="append", choices=tuple(claims_real.DATA_OPTIONS),
                    help="--real: only this data set (repeatable; default: every one a claim has)")
    ap.add_argument("--gpu", type=float, default=0.0, metavar="SHARE",
                    help="--real: each run's share of a GPU (resources.gpu), e.g. 0.1 runs 10 at once on one GPU")
    ap.add_argument("--smoke-test", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "claims.md"))
    args = ap.parse_args(argv)

    from tuner import compare

    files = sorted(glob.glob(os.path.join(ROOT, "search_spaces", "claims", "*.yaml")))
    names = [os.path.splitext(os.path.basename(f))[0] for f in files]
    unknown = [c for c in args.claims if c not in names]
    if unknown:
        print(f"claims.py: unknown claim {unknown[0]!r}; valid: {', '.join(names)}", file=sys.stderr)
        return 2
    chosen = [f for f, n in zip(files, names) if not args.claims or n in args.claims]
    if args.real:
        return real(chosen, args)
    sections = []
    for f in chosen:
        name = os.path.splitext(os.path.basename(f))[0]
        runs = [("synthetic default", None)] + ([("Amazon Beauty", "beauty")] if name in args.beauty else [])
        for label, which in runs:
            claim = compare.load_claim(f, smoke=args.smoke_test)
            if args.seeds and not args.smoke_test:
                claim = dataclasses.replace(claim, seeds=args.seeds)
            if which == "beauty":
                claim = on_beauty(claim, args.beauty_epochs)
            t0 = time.time()
            res = compare.run(claim, output=os.path.join(ROOT, "runs"), verbose=0)
            cmd = f"tuner compare search_spaces/claims/{name}.yaml" if which is None else \
                f"python benchmarks/claims.py {name} --beauty {name}" + (
                    f" --beauty-epochs {args.beauty_epochs}" if args.beauty_epochs else "")
            if args.seeds and not args.smoke_test:
                cmd += f" --seeds {args.seeds}"
            sections.append(f"### {name} ({label})\n\n{claim.claim}\n\n{res.markdown}\n\n"
                            f"{claim.seeds} seeds per side; data {res.extra['dataset']}; wall time "
                            f"{time.time() - t0:.0f} s. Command: `{cmd}`\n")
            print(sections[-1], flush=True)
    if args.smoke_test:
        return 0
    head = (f"# The seeds' claims, measured\n\nGenerated by `python benchmarks/claims.py` on {os.cpu_count()} cores "
            f"({platform.machine()}), {time.strftime('%Y-%m-%d')}. Each table: two fixed configurations, the "
            "same seeds on both sides, test metrics from each run's best-validation checkpoint, the paired "
            "difference B - A with a 95% Student-t confidence interval, and the verdict at this N; beside it the "
            "paired t, Wilcoxon signed-rank and exact sign-test p-values and the seeds a paired t-test would need "
            "for 80% power at the observed effect.\n\n")
    old = open(args.out).read() if os.path.exists(args.out) else ""
    keep = old[:old.index(claims_real.END) + len(claims_real.END)] + "\n\n" if claims_real.END in old else ""
    with open(args.out, "w") as fh:  # the real-data section (--real) stays on top
        fh.write(keep + head + "\n".join(sections))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    import entry

    raise SystemExit(entry.run(main, "benchmarks/claims.py"))
