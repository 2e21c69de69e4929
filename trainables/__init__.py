"""Trainables: one entry per model, each a typed config plus a training recipe.

Add a model by writing a module with a frozen `Config` dataclass and a `Recipe` subclass
(trainables/loop.py), then one line in MODELS. Nothing here imports Ray.
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
    task: str = "ranking"  # "ranking": full-catalogue HR/NDCG/MRR; other tasks override metrics/load_data
    metrics: Callable[[tuple[int, ...]], list[str]] | None = None  # reported metric names; default ranking
    load_data: Callable[[Any], Any] | None = None  # spec -> dataset; default trainables.datasets.dataset_for

    def metric_names(self, ks: tuple[int, ...]) -> list[str]:
        if self.metrics is not None:
            return list(self.metrics(ks))
        from trainables.metrics import metric_names

        return metric_names(ks, "val_") + ["train_loss"]

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
                                    validate=fusion_classifier.validate, task="classification",
                                    metrics=fusion_classifier.metric_names, load_data=fusion_classifier.load_data),
    "two_tower": ModelEntry("two_tower", two_tower.Config, two_tower.TwoTowerRecipe, validate=two_tower.validate),
    "sasrec": ModelEntry("sasrec", sasrec.Config, sasrec.SASRecRecipe, validate=sasrec.validate),
}


def get_model(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise TunerError(f"unknown model {name!r}; valid: {', '.join(MODELS)}") from None
