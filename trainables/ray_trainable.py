"""The Ray Tune function trainable: `trainables.loop.fit` with Tune's checkpoints around it.

One of the few files that import Ray. Every epoch reports validation metrics with a checkpoint
(model, optimizer, epoch, RNG); a restarted trial resumes from `tune.get_checkpoint()`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import ray
import torch
from ray import tune

from trainables import get_model
from trainables.loop import fit
from tuner import metrics as M

STATE_FILE = "state.pt"


def load_state(checkpoint, device: torch.device) -> dict[str, Any]:
    """Read a checkpoint's training state; weights_only refuses pickled code."""
    with checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, STATE_FILE), map_location=device, weights_only=True)


def train(config: dict[str, Any], *, data, model: str, ks=(10, 20), batch_users: int = M.EVAL_BATCH_USERS, use_gpu: bool = False):
    """Tune entry point; `data` arrives once per node through tune.with_parameters."""
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))  # one trial per core: no oversubscription
    checkpoint = tune.get_checkpoint()
    state = load_state(checkpoint, device) if checkpoint else None

    def report(metrics: dict[str, float], get_state) -> None:
        with tempfile.TemporaryDirectory() as d:
            torch.save(get_state(), os.path.join(d, STATE_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    fit(get_model(model), config, data, report, state=state, device=device, ks=ks, batch_users=batch_users)
