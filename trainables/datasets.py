"""The dataset a spec's `data` section names: the synthetic generator or a file, with optional item
attributes and a smoke-test user slice. Kept apart from data.py so data.py and synthetic.py do not
import each other."""

from __future__ import annotations

import sys
from dataclasses import replace

from trainables import synthetic, yamlio
from trainables.data import Dataset, load, load_item_attributes, user_slice


def dataset_for(spec) -> Dataset:
    """The dataset a spec names: the synthetic generator or a file (+ optional attributes)."""
    if spec.data.source == "synthetic":
        s = spec.data.synthetic
        return synthetic.generate(s.n_users, s.n_items, s.mean_length, s.seed)
    data = load(spec.data_path, spec.data.format)
    if spec.data.item_attributes:
        path = yamlio.beside(spec.path, spec.data.item_attributes)  # as the spec check resolved it
        data = replace(data, item_features=load_item_attributes(path, data))
    if spec.data.smoke_users:
        total = data.n_users
        data = user_slice(data, spec.data.smoke_users, spec.search.seed)
        print(f"smoke test: {data.n_users} of {total} users of {spec.data_path}", file=sys.stderr)
    return data
