"""Trainables: one entry per model, each a typed config plus a training recipe.

Add a model by writing a module with a frozen `Config` extending trainables.train_config.TrainConfig
and a recipe (trainables.loop.RankingRecipe for ranking, Recipe otherwise), then one entry in MODELS
and a search-space YAML (README "Add a model"; tests/test_add_a_model.py). Nothing here imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from trainables import config as _config
from trainables.errors import TunerError
from trainables import bpr_mf
from trainables import fusion_classifier, multimodal
from trainables import sasrec, two_tower


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config_cls: type
    recipe: type  # a trainables.loop.Recipe subclass
    validate: Callable[[Any], None] | None = None  # cross-field checks on a built config
    # Ranking (full-catalogue HR/NDCG/MRR against a popularity baseline) is the default; another
    # task (fusion_classifier: classification) brings its own metric names, data and no baseline.
    metrics: Callable[[tuple[int, ...]], list[str]] | None = None  # reported metric names; default ranking
    load_data: Callable[[Any], Any] | None = None  # spec -> dataset; default trainables.datasets.dataset_for
    ranking: bool = True  # has a popularity baseline and hr/ndcg@k headline metrics

    def metric_names(self, ks: tuple[int, ...]) -> list[str]:
        if self.metrics is not None:
            return list(self.metrics(ks))
        from trainables.metrics import metric_names

        return metric_names(ks, "val_") + ["train_loss"]

    def headline(self, ks: tuple[int, ...]) -> list[str] | None:
        """Metric names (without val_/test_) a summary line shows; None: every metric but per-class ones."""
        return [f"{m}_{k}" for k in ks for m in ("hr", "ndcg")] if self.ranking else None

    def baseline(self, data: Any, ks: tuple[int, ...]) -> dict[str, dict[str, float]]:
        """{"valid": metrics, "test": metrics} of the popularity baseline; {} for tasks without one."""
        if not self.ranking:
            return {}
        from trainables.metrics import popularity

        counts = data.train_counts()
        return {s: popularity(counts, data.split(s), ks) for s in ("valid", "test")}

    def dataset(self, spec) -> Any:
        if self.load_data is not None:
            return self.load_data(spec)
        from trainables.datasets import dataset_for

        return dataset_for(spec)

    def make_config(self, values: Mapping[str, Any]) -> Any:
        cfg = _config.build(self.config_cls, {k: v for k, v in values.items()}, file=None, prefix="")
        if self.validate is not None:
            self.validate(cfg)
        return cfg


MODELS: dict[str, ModelEntry] = {
    "bpr_mf": ModelEntry("bpr_mf", bpr_mf.Config, bpr_mf.BPRMFRecipe, validate=bpr_mf.validate),
    "multimodal": ModelEntry("multimodal", multimodal.Config, multimodal.MultimodalRecipe,
                             validate=multimodal.validate, load_data=multimodal.load_data),
    "fusion_classifier": ModelEntry("fusion_classifier", fusion_classifier.Config, fusion_classifier.FusionRecipe,
                                    validate=fusion_classifier.validate, ranking=False,
                                    metrics=fusion_classifier.metric_names, load_data=fusion_classifier.load_data),
    "two_tower": ModelEntry("two_tower", two_tower.Config, two_tower.TwoTowerRecipe, validate=two_tower.validate),
    "sasrec": ModelEntry("sasrec", sasrec.Config, sasrec.SASRecRecipe, validate=sasrec.validate),
}


def get_model(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise TunerError(f"unknown model {name!r}; valid: {', '.join(MODELS)}") from None
