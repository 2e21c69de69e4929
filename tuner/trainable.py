"""The Ray Tune function trainable: `trainables.loop.fit` with Tune's checkpoints around it.

One of the few files that import Ray. Every epoch reports validation metrics with a checkpoint
(model, optimizer, epoch, RNG, and a SHA-256 of the file); a restarted trial resumes from
`tune.get_checkpoint()`, or from its newest earlier checkpoint that is intact (tuner/checkpoints.py).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import ray
import torch
from ray import tune

from trainables import get_model
from trainables.loop import fit
from tuner import checkpoints
from trainables import metrics as M

STATE_FILE = checkpoints.STATE_FILE
log = logging.getLogger(__name__)


def device_label(device: torch.device, use_gpu: bool) -> str:
    """'cpu', or the device with the GPUs Ray assigned (it sets CUDA_VISIBLE_DEVICES to them)."""
    if not use_gpu:
        return device.type
    return f"{device.type} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')})"


def load_state(checkpoint, device: torch.device) -> dict[str, Any] | None:
    """A checkpoint's training state (weights_only refuses pickled code), verified; a corrupt one
    falls back to the trial's previous checkpoint, and None (start over) when none is intact."""
    state, _ = checkpoints.load_with_fallback(checkpoint, device)  # in a bucket too (run.storage)
    return state


def train(config: dict[str, Any], *, data, model: str, ks=(10, 20), batch_users: int = M.EVAL_BATCH_USERS, use_gpu: bool = False):
    """Tune entry point; `data` arrives once per node through tune.with_parameters."""
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    where = device_label(device, use_gpu)
    if use_gpu and device.type == "cpu":  # the same YAML runs on machines (or logical GPUs) without CUDA
        log.warning("trial runs on the CPU: Ray assigned it %s but torch sees no CUDA device", where)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))  # one trial per core: no oversubscription
    checkpoint = tune.get_checkpoint()
    state = load_state(checkpoint, device) if checkpoint else None

    def report(metrics: dict[str, float], get_state) -> None:
        with tempfile.TemporaryDirectory() as d:
            checkpoints.save(get_state(), d)
            # `device` is text: Tune keeps it in each result, MLflow metrics skip it
            tune.report({**metrics, "device": where}, checkpoint=tune.Checkpoint.from_directory(d))

    fit(get_model(model), config, data, report, state=state, device=device, ks=ks, batch_users=batch_users)
