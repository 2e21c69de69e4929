"""The Optuna searcher of a sweep: ASHA-stopped trials are PRUNED, interrupted ones are not told.

Stock OptunaSearch reports a trial stopped at epoch 2 as COMPLETE with its epoch-2 value, so TPE
and parameter importances would learn from truncated results; and a trial cut short by Ctrl+C
must reach Optuna only when `tuner resume` has finished it, so that MLflow and Optuna agree.

One score everywhere (issue 17): a COMPLETE trial is told its best value over the epochs it ran
(the checkpoint test metrics come from), not its last; every epoch is an intermediate value at
step = epoch, including the one a scheduler stopped the trial on (Tune hands that result to
on_trial_complete only, so stock OptunaSearch never reported it).
"""

from __future__ import annotations

import logging
import warnings

import optuna
from ray.tune.search.optuna import OptunaSearch

from tuner import raycompat

log = logging.getLogger(__name__)


class PrunedAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells ASHA-stopped trials to Optuna as PRUNED, not COMPLETE.

    Stock OptunaSearch reports a trial stopped at epoch 2 as COMPLETE with its epoch-2 value,
    so TPE and parameter importances would learn from truncated results.
    """

    def __init__(self, *args, epochs_of, owner: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._epochs_of = epochs_of
        self._owner = owner  # the sweep folder's name, stored on each Optuna trial
        self._configs: dict[str, dict] = {}
        self._name_metric()

    @property
    def owner(self) -> str | None:
        """The sweep folder's name this searcher labels its Optuna trials with (None: unlabelled;
        a searcher pickled before labels existed has no _owner)."""
        return getattr(self, "_owner", None)

    def _name_metric(self) -> None:
        """The objective shows as the spec's metric in optuna-dashboard, not "Objective 0"."""
        study = raycompat.optuna_study(self)
        if study is not None and isinstance(self.metric, str):
            try:
                with warnings.catch_warnings():  # "experimental since 3.2": stable in use, noise on every run
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names([self.metric])
            except Exception as e:  # noqa: BLE001 - labelling only
                log.warning("could not name the study's metric: %s", e)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        ok = super().set_search_properties(metric, mode, config, **spec)
        if ok:
            self._name_metric()
        return ok

    def number_of(self, trial_id: str) -> int | None:
        """The Optuna trial number of a Ray trial (MLflow names its run trial-NNN after it)."""
        ot = raycompat.optuna_trials(self).get(trial_id)
        return None if ot is None else int(ot.number)

    def link(self, trial_id: str, **attrs) -> None:
        """User attributes on the Optuna trial pointing at the same trial elsewhere (MLflow run)."""
        ot = raycompat.optuna_trials(self).get(trial_id)
        if ot is None or self._told(trial_id):
            return
        for k, v in attrs.items():
            try:
                ot.set_user_attr(k, v)
            except Exception as e:  # noqa: BLE001 - bookkeeping only
                log.warning("could not set %s on Optuna trial of %s: %s", k, trial_id, e)

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if config is not None:
            self._configs[trial_id] = config
            self.link(trial_id, ray_trial_id=trial_id)
            if self.owner:  # lets a resume find this sweep's orphans in a shared study
                try:
                    raycompat.optuna_trials(self)[trial_id].set_user_attr("tuner.sweep", self.owner)
                except Exception as e:  # noqa: BLE001 - bookkeeping only
                    log.warning("could not label Optuna trial of %s: %s", trial_id, e)
        return config

    def _told(self, trial_id: str) -> bool:
        """Optuna already has this trial's result: a trial re-run after the driver died (Ray had not
        saved that it ended) must not be told twice ("Cannot tell a COMPLETE trial")."""
        ot = raycompat.optuna_trials(self).get(trial_id)
        try:
            return ot is not None and raycompat.stored_trial(raycompat.optuna_study(self), ot).state.is_finished()
        except Exception:  # noqa: BLE001 - unknown to this storage: let the normal path decide
            return False

    def _report(self, trial_id: str, result: dict | None) -> None:
        """One intermediate value per epoch, step = epoch (a replayed epoch keeps its first value)."""
        ot = raycompat.optuna_trials(self).get(trial_id)
        if ot is None or not result or self.metric not in result or "epoch" not in result:
            return
        step = int(result["epoch"])
        try:
            stored = raycompat.stored_trial(raycompat.optuna_study(self), ot)
            if step in stored.intermediate_values or stored.state.is_finished():
                return
            ot.report(float(result[self.metric]), step)
        except Exception as e:  # noqa: BLE001 - a NaN, or a trial finished elsewhere
            log.warning("could not report epoch %s of %s to Optuna: %s", step, trial_id, e)

    def on_trial_result(self, trial_id: str, result: dict):
        if trial_id in raycompat.completed_trials(self) or isinstance(self.metric, list):
            return
        self._report(trial_id, result)

    def best_value(self, trial_id: str) -> float | None:
        """The trial's score: its best intermediate value (stored in optuna.db, so it survives a resume)."""
        ot = raycompat.optuna_trials(self).get(trial_id)
        try:
            values = [v for v in raycompat.stored_trial(raycompat.optuna_study(self), ot).intermediate_values.values()
                      if v == v]
        except Exception:  # noqa: BLE001 - unknown trial
            return None
        if not values:
            return None
        return max(values) if self.mode == "max" else min(values)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        config = self._configs.get(trial_id)
        study, ot_trials, completed = (raycompat.optuna_study(self), raycompat.optuna_trials(self),
                                       raycompat.completed_trials(self))
        if self._told(trial_id):
            completed.add(trial_id)
            return
        if not error:
            self._report(trial_id, result)  # the epoch a stopper ended it on
        # Tune calls this only for a trial it ends for good (stop_trial saves it TERMINATED), also in
        # the step it finishes after a Ctrl+C; trials a Ctrl+C cuts short never get here, and
        # `tuner resume` tells Optuna at their real end.
        if (result and not error and config is not None and trial_id in ot_trials
                and trial_id not in completed
                and int(result.get("epoch", 0)) < self._epochs_of(config)):
            # the same stop reason as MLflow's tag: the pathology stopper's, else ASHA's (only a
            # scheduler or the stopper end a trial early)
            self.link(trial_id, stop_reason=str(result.get("stop_reason") or "asha"))
            try:
                study.tell(ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
            except Exception as e:  # noqa: BLE001 - e.g. already told after a restore
                log.warning("could not tell Optuna trial %s as pruned: %s", trial_id, e)
            completed.add(trial_id)
            return
        # only a trial that ran every planned epoch is COMPLETE (a trial paused at an asha_promote
        # rung and ended without a result falls through to the stock path: PRUNED)
        ran_all = bool(result) and config is not None and int(result.get("epoch", 0)) >= self._epochs_of(config)
        best = self.best_value(trial_id) if ran_all and not error else None
        if best is not None and trial_id in ot_trials and trial_id not in completed:
            study.tell(ot_trials[trial_id], best, state=optuna.trial.TrialState.COMPLETE)
            completed.add(trial_id)
            return
        if not error and not result:  # paused at an asha_promote rung, never promoted: PRUNED by ASHA
            self.link(trial_id, stop_reason="asha")
        super().on_trial_complete(trial_id, result, error)
