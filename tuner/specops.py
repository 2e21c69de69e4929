"""Operations on a validated Spec: the specs derived from it (`--max-epochs`, `--smoke-test`, the
best_config.yaml a sweep writes) and the check of its resources against a Ray cluster.

Re-exported by tuner/spec.py, the public entry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import yaml

from trainables import config as cfgmod
from trainables.errors import TunerError, where
from tuner.sections import SMOKE_USERS, DataSpec, ResourcesSpec, Spec, SyntheticSpec


def with_max_epochs(spec: Spec, n: int) -> Spec:
    """`--max-epochs N`: every trial runs (at most) N epochs; `epochs` leaves the search space."""
    if not 1 <= n <= 10_000:
        raise TunerError(f"--max-epochs: must be between 1 and 10000, got {cfgmod.short_number(n)}")
    space = tuple(p for p in spec.space if p.name != "epochs")
    grace = min(spec.scheduler.grace_period, n)
    return spec.replace(fixed={**spec.fixed, "epochs": n}, space=space,
                        scheduler=dataclasses.replace(spec.scheduler, grace_period=grace))


def _smoke_data(spec: Spec) -> DataSpec:
    """File data keeps its file and loader (a smoke test should exercise them) on a slice of its users."""
    if spec.data.source == "file":
        return dataclasses.replace(spec.data, smoke_users=SMOKE_USERS)
    return DataSpec(synthetic=SyntheticSpec(n_users=200, n_items=100, mean_length=12.0, seed=0), item_attributes=None)


def smoke(spec: Spec) -> Spec:
    """The `--smoke-test` variant: 2 trials x 2 epochs on tiny synthetic data, or on 300 users of the data file."""
    space = tuple(p for p in spec.space if p.name != "epochs")
    return spec.replace(
        name=f"{spec.name}-smoke",
        data=_smoke_data(spec),
        fixed={**spec.fixed, "epochs": 2},
        space=space,
        search=dataclasses.replace(spec.search, samples=2, concurrency=2),
        scheduler=dataclasses.replace(spec.scheduler, grace_period=1),
        resources=ResourcesSpec(cpu=1.0, gpu=0.0),
    )


def dump_fixed(spec: Spec, config: Mapping[str, Any]) -> str:
    """A spec YAML running exactly `config` (no search): what `tuner run` writes as best_config.yaml."""
    out: dict[str, Any] = {
        "name": f"{spec.name}-best",
        "model": spec.model,
        "metric": cfgmod.to_dict(spec.metric),
        "data": {k: v for k, v in cfgmod.to_dict(spec.data).items() if v is not None},
        "eval": cfgmod.to_dict(spec.eval),
        "fixed": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()},
        "search": {"samples": 1, "concurrency": 1, "seed": spec.search.seed},
        "scheduler": {"type": "fifo"},
        "resources": cfgmod.to_dict(spec.resources),
    }
    if spec.data_path:
        out["data"]["path"] = spec.data_path
    if spec.data.item_attributes:
        out["data"]["item_attributes"] = spec.resolve(spec.data.item_attributes)
    if spec.data.source != "synthetic":
        out["data"].pop("synthetic", None)
    return yaml.safe_dump(out, sort_keys=False)


def check_resources(spec: Spec, cpus: float, gpus: float) -> None:
    """A trial that asks for more than the largest node has would wait forever: refuse it now."""
    for key, want, have in (("cpu", spec.resources.cpu, cpus), ("gpu", spec.resources.gpu, gpus)):
        if want > have:
            raise TunerError(f"{where(spec.path, f'resources.{key}')}: each trial asks for {want:g} but the largest "
                             f"Ray node has {have:g}; no trial could ever start (lower it, or join a larger cluster)")
