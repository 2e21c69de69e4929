"""The Ray Tune stopper that ends a trial when analysis.diagnose finds a pathology in its history."""

from __future__ import annotations

from typing import Any

from ray.tune.stopper import Stopper

from analysis.diagnose import DiagnoseConfig, PathologyWatch


class PathologyStopper(Stopper):
    """Stop a trial as soon as `analysis.diagnose.PathologyWatch` says so.

    Pass as `tune.RunConfig(stop=PathologyStopper(metric, mode, cfg))`. Ray calls it on the driver
    with every result before the callbacks; when it fires, `reasons[trial_id]` holds the Diagnosis
    and the result itself gets `stop_reason = str(diagnosis)`, which becomes trial.last_result, so
    TrialRuns.on_trial_complete's `last.get("stop_reason")` tags it.
    """

    def __init__(self, metric: str, mode: str = "max", cfg: DiagnoseConfig = DiagnoseConfig(),
                 reference: float | None = None):
        self.watch = PathologyWatch(metric, mode, cfg, reference)
        self.reasons = self.watch.reasons  # trial_id -> Diagnosis

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.watch.observe(trial_id, result) is not None

    def stop_all(self) -> bool:
        return False
