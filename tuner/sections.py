"""The sections of a spec file as frozen dataclasses: their fields, defaults and bounds.

tuner/spec.py (the public entry: load, parse, smoke, ...) validates a YAML mapping into these;
the layout of a file is documented there.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from analysis.diagnose import DiagnoseConfig
from trainables import yamlio
from trainables.config import bounded, text
from trainables.metrics import EVAL_BATCH_USERS

MAX_SEED = 2**32 - 1  # numpy / Optuna seeds


@dataclass(frozen=True)
class MetricSpec:
    name: str = "val_ndcg_10"  # a key the trainable reports every epoch
    mode: Literal["max", "min"] = "max"


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and seed of the embedded generator (trainables.synthetic documents the planted truth)."""

    n_users: int = bounded(3000, low=10, high=1_000_000)
    n_items: int = bounded(1000, low=20, high=1_000_000)
    mean_length: float = bounded(20.0, low=3.0, high=1000.0)
    seed: int = bounded(0, low=0, high=MAX_SEED)


@dataclass(frozen=True)
class DataSpec:
    source: Literal["synthetic", "file"] = "synthetic"
    path: str | None = None  # relative paths are resolved against the YAML file's folder
    format: Literal["auto", "pairs", "sequences", "csv", "tsv", "inter"] = "auto"
    item_attributes: str | None = None  # S3-Rec item2attributes.json, for content-aware models
    synthetic: SyntheticSpec = SyntheticSpec()
    # set by --smoke-test on file data: train and evaluate on this many users of the file (seeded slice)
    smoke_users: int | None = None


SMOKE_USERS = 300  # enough users for every metric to be defined, few enough for seconds per epoch


@dataclass(frozen=True)
class EvalSpec:
    ks: tuple[int, ...] = (10, 20)
    batch_users: int = bounded(EVAL_BATCH_USERS, low=1, high=1 << 16)


@dataclass(frozen=True)
class SearchSpec:
    samples: int = bounded(16, low=1, high=100_000)
    concurrency: int = bounded(2, low=1, high=1024)
    seed: int = bounded(0, low=0, high=MAX_SEED)
    algo: Literal["tpe", "random"] = "tpe"
    # Optuna's TPESampler options (algo tpe only; names as Optuna's): random trials before TPE
    # models (the warm-up phase), a joint density over the knobs instead of one per knob, that
    # joint density per group of knobs that occur together (conditional `when` spaces), and
    # running trials counted as if they had scored worst (so parallel workers do not propose the same);
    # paused_as_pruned is ours, not Optuna's: trials waiting at an asha_promote rung (RUNNING to
    # Optuna) count as PRUNED at their last epoch while TPE samples (tuner/sampler.py says why);
    # largest_rung is ours: TPE ranks trials by their value at the largest epoch that d + 1 trials
    # reached (BOHB's model), not COMPLETE above PRUNED;
    # random_fraction is ours too: that share of the trials after start-up are uniform draws (BOHB's 1/3);
    # gamma: the size of TPE's good group, Optuna's (top 10%, at most 25) or BOHB's (top 15%, at least
    # d + 1 for d knobs; tuner/sampler.py bohb_gamma)
    n_startup_trials: int = bounded(10, low=0, high=100_000)
    multivariate: bool = False
    group: bool = False
    constant_liar: bool = False
    paused_as_pruned: bool = False
    largest_rung: bool = False
    random_fraction: float = bounded(0.0, low=0.0, high=1.0)
    gamma: Literal["optuna", "bohb"] = "optuna"
    # a budget in trial-epochs for the whole sweep (Hyperband's total budget; Ray's time_budget_s, but
    # in epochs, so reruns agree): once the trials have run this many epochs in all, Tune stops every
    # trial and starts no more, and the sweep ends completed with what it found (tuner/stopper.py)
    epoch_budget: int | None = bounded(None, low=1, high=100_000_000)
    # a target for the metric (>= for mode max, <= for min): once a trial's validation value reaches it,
    # the sweep ends as at its budget (Optuna users' study.stop() in a callback; a time-to-target run)
    stop_at: float | None = None
    study_name: str | None = text(None, max_len=200)
    # Optuna's RDB storage (sqlite:///..., postgresql://user@host/db, mysql://...); default: optuna.db
    # beside mlflow.db. A shared database lets several drivers sweep at once and one dashboard read
    # them all; put the password in the environment (PGPASSWORD), not here: this file is logged.
    storage: str | None = text(None, max_len=2000)


@dataclass(frozen=True)
class SchedulerSpec:
    # asha: Ray's ASHAScheduler (a trial continues if at or above the (1 - 1/rf) quantile of the trials
    #   that reached the rung before it; the first arrivals always continue).
    # asha_promote: ASHA with promotions (tuner/schedulers.py): a trial pauses at a rung and resumes
    #   once it ranks in the top floor(n / rf) of the n trials that reached it.
    type: Literal["asha", "asha_promote", "fifo"] = "asha"
    grace_period: int = bounded(2, low=1, high=10_000)
    reduction_factor: float = bounded(3.0, low=1.01, high=1000.0)
    # Hyperband's brackets (Ray's AsyncHyperBand `brackets`): bracket s compares its trials from rung s
    # on, so a slow starter in a later bracket is never judged at the early rungs. Trials go to bracket
    # s in proportion to e^-s (Ray's weights): at random under asha, in a fixed order under asha_promote.
    brackets: int = bounded(1, low=1, high=16)

    def rungs(self, max_t: int) -> tuple[int, ...]:
        """The milestones (epochs) at which trials are compared."""
        g, rf = self.grace_period, self.reduction_factor
        if self.type == "asha":  # Ray's AsyncHyperBand _Bracket formula (one bracket)
            n = int(math.log(max_t / g) / math.log(rf) + 1)
            return tuple(int(g * rf**k) for k in range(n))
        if self.type == "asha_promote":  # a rung only where a promotion buys at least rf x its epochs
            out, r = [], float(g)
            while r * rf <= max_t:
                out.append(int(r))
                r *= rf
            return tuple(out)
        return ()


@dataclass(frozen=True)
class ResourcesSpec:
    cpu: float = bounded(1.0, low=0.0, high=1024.0)  # check_resources compares with the cluster
    gpu: float = bounded(0.0, low=0.0, high=64.0)


@dataclass(frozen=True)
class TrackingSpec:
    uri: str | None = text(None, max_len=2000)  # default: sqlite:///<output>/mlflow.db
    experiment: str | None = text(None, max_len=200)  # default: the spec's name


@dataclass(frozen=True)
class RunSpec:
    max_failures: int = bounded(0, low=-1, high=1000)
    checkpoints_to_keep: int = bounded(2, low=1, high=1000)
    # Ray Tune's storage_path: a folder, or a bucket URI (s3://BUCKET/PREFIX, gs://...); state and
    # checkpoints go to <storage>/<sweep folder name>. Default: <sweep folder>/ray on the driver.
    storage: str | None = text(None, max_len=2000)


@dataclass(frozen=True)
class Param:
    """One searched knob, in Optuna's vocabulary."""

    name: str
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # ((param, allowed values), ...)
    doc: str = ""  # free text, e.g. which seed the range comes from


@dataclass(frozen=True)
class _RawParam:  # the YAML shape of a Param, checked by config.build
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None
    when: dict | None = None
    doc: str = ""


@dataclass(frozen=True)
class Spec:
    path: str  # the YAML file (for messages and resolving relative data paths)
    name: str
    model: str
    metric: MetricSpec = MetricSpec()
    data: DataSpec = DataSpec()
    eval: EvalSpec = EvalSpec()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    space: tuple[Param, ...] = ()
    search: SearchSpec = SearchSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    resources: ResourcesSpec = ResourcesSpec()
    tracking: TrackingSpec = TrackingSpec()
    run: RunSpec = RunSpec()
    diagnose: DiagnoseConfig = DiagnoseConfig()  # pathology stopper thresholds (analysis/diagnose.py)

    @property
    def data_path(self) -> str | None:
        """The data file, resolved against the spec file's folder."""
        return yamlio.beside(self.path, self.data.path)

    def resolve(self, path: str | None) -> str | None:
        """Any path written in the spec (data.item_attributes, ...), resolved as data_path is."""
        return yamlio.beside(self.path, path)

    def model_entry(self):
        from trainables import get_model

        return get_model(self.model)

    def max_epochs(self) -> int:
        """The most epochs any trial can run (ASHA's max_t)."""
        for p in self.space:
            if p.name == "epochs":
                return int(max(p.choices) if p.type == "categorical" else p.high)
        return self.default_epochs()

    def default_epochs(self) -> int:
        """The epochs of a trial whose config does not search `epochs`: fixed, else the model's default."""
        return int(self.fixed.get("epochs", self.model_entry().config_cls().epochs))

    def rungs(self) -> tuple[int, ...]:
        """The epochs at which the scheduler compares trials (the one place grace_period meets max_t)."""
        return self.scheduler.rungs(self.max_epochs())

    def replace(self, **changes: Any) -> "Spec":
        return dataclasses.replace(self, **changes)
