"""The Optuna searcher of a sweep: ASHA-stopped trials are PRUNED, interrupted ones are not told.

Stock OptunaSearch reports a trial stopped at epoch 2 as COMPLETE with its epoch-2 value, so TPE
and parameter importances would learn from truncated results; and a trial cut short by Ctrl+C
must reach Optuna only when `tuner resume` has finished it, so that MLflow and Optuna agree.
"""

from __future__ import annotations

import logging

import optuna
from ray.tune.search.optuna import OptunaSearch

from tuner import recover

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

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if config is not None:
            self._configs[trial_id] = config
            if getattr(self, "_owner", None):  # lets a resume find this sweep's orphans in a shared study
                try:
                    self._ot_trials[trial_id].set_user_attr("tuner.sweep", self._owner)
                except Exception as e:  # noqa: BLE001 - bookkeeping only
                    log.warning("could not label Optuna trial of %s: %s", trial_id, e)
        return config

    def _told(self, trial_id: str) -> bool:
        """Optuna already has this trial's result: a trial re-run after the driver died (Ray had not
        saved that it ended) must not be told twice ("Cannot tell a COMPLETE trial")."""
        ot = self._ot_trials.get(trial_id)
        try:
            return ot is not None and self._ot_study._storage.get_trial(ot._trial_id).state.is_finished()
        except Exception:  # noqa: BLE001 - unknown to this storage: let the normal path decide
            return False

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        config = self._configs.get(trial_id)
        if self._told(trial_id):
            self._completed_trials.add(trial_id)
            return
        if (recover.INTERRUPTED.is_set() and not error and config is not None
                and int((result or {}).get("epoch", 0)) < self._epochs_of(config)):
            # stopped by Ctrl+C, not by ASHA: `tuner resume` continues it and tells Optuna at its
            # real end (told PRUNED here, it ended `completed` in MLflow but PRUNED in Optuna)
            return
        if (result and not error and config is not None and trial_id in self._ot_trials
                and trial_id not in self._completed_trials
                and int(result.get("epoch", 0)) < self._epochs_of(config)):
            try:
                self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
            except Exception as e:  # noqa: BLE001 - e.g. already told after a restore
                log.warning("could not tell Optuna trial %s as pruned: %s", trial_id, e)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)
