"""RecBole SASRec run, executed INSIDE the RecBole venv by recbole_sasrec.py (see its docstring).

    <venv>/bin/python _recbole_runner.py --data-dir DIR --epochs N --eval-batch-size B --result OUT.json

DIR holds beauty/beauty.inter. Runs RecBole's own Trainer.fit (no checkpoints), timing every
_train_epoch and _valid_epoch, and writes the per-epoch record to OUT.json.
"""

import argparse
import json
import os
import sys
import time
import types
import warnings


def install_shims():
    """Make RecBole 1.2.1 importable with numpy 2 and without tensorboard (documented in recbole_sasrec.py)."""
    import numpy as np

    # numpy 2 removed these aliases; RecBole's Config.compatibility_settings() reads np.float_,
    # np.complex_ and np.unicode_ (AttributeError otherwise) and its metrics use np.float / np.bool.
    aliases = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_,
               "float": np.float64, "int": np.int_, "bool": np.bool_, "long": np.int_,
               "complex": np.complex128, "object": np.object_, "str": np.str_, "unicode": np.str_}
    for name, value in aliases.items():
        with warnings.catch_warnings():  # numpy warns on the probe of a removed alias
            warnings.simplefilter("ignore")
            missing = not hasattr(np, name)
        if missing:
            setattr(np, name, value)

    # recbole.utils imports torch.utils.tensorboard.SummaryWriter at import time, which needs the
    # tensorboard package (grpcio, protobuf, ...). Nothing here reads its event files: a no-op writer.
    class SummaryWriter:
        def __init__(self, *args, **kwargs):
            pass

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    stub = types.ModuleType("torch.utils.tensorboard")
    stub.SummaryWriter = SummaryWriter
    sys.modules["torch.utils.tensorboard"] = stub


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--eval-batch-size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target-ndcg", type=float, default=0.045)
    p.add_argument("--result", required=True)
    args = p.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv too, and warns about ours
    # Known noise from RecBole 1.2.1 on current pandas/torch (chained fillna, torch.cuda.amp.GradScaler).
    warnings.filterwarnings("ignore", category=FutureWarning)

    install_shims()
    import torch

    torch.set_num_threads(args.threads)
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    config_dict = {
        "data_path": args.data_dir,
        "checkpoint_dir": os.path.join(args.data_dir, "saved"),  # created by Trainer, never written
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "loss_type": "CE",
        "train_neg_sample_args": None,  # RecBole refuses CE with negative sampling
        "MAX_ITEM_LIST_LENGTH": 50,
        "hidden_size": 64,
        "inner_size": 256,
        "n_layers": 2,
        "n_heads": 2,
        "train_batch_size": 256,
        "eval_batch_size": args.eval_batch_size,
        "learning_rate": 0.001,
        "epochs": args.epochs,
        "eval_step": 1,
        "stopping_step": args.epochs + 1,  # never stops early within the run
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "metric_decimal_place": 6,
        "use_gpu": False,
        "gpu_id": "",  # RecBole 1.2.1 picks the device from gpu_id: empty -> cpu
        "seed": 0,
        "reproducibility": True,
        "worker": 0,
        "show_progress": False,
        "state": "WARNING",
    }
    config = Config(model="SASRec", dataset="beauty", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])

    t0 = time.perf_counter()
    dataset = create_dataset(config)
    counts = {"users": dataset.user_num - 1, "items": dataset.item_num - 1, "interactions": dataset.inter_num}
    train_data, valid_data, _test_data = data_preparation(config, dataset)
    setup_seconds = time.perf_counter() - t0
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])  # as run_recbole does
    model = SASRec(config, train_data._dataset).to(config["device"])

    epochs = []

    class TimedTrainer(Trainer):
        """RecBole's Trainer, with each training epoch and each validation timed separately."""

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            t = time.perf_counter()
            loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
            epochs.append({"epoch": epoch_idx + 1, "train_seconds": time.perf_counter() - t,
                           "train_loss_mean": loss / len(train_data)})
            return loss

        def _valid_epoch(self, valid_data, show_progress=False):
            t = time.perf_counter()
            score, result = super()._valid_epoch(valid_data, show_progress)
            e = epochs[-1]
            e.update(eval_seconds=time.perf_counter() - t, val_ndcg_10=float(result["ndcg@10"]),
                     val_hit_10=float(result["hit@10"]), since_train_start=time.perf_counter() - fit_start)
            print(f"recbole epoch {e['epoch']}: train {e['train_seconds']:.1f}s  eval {e['eval_seconds']:.1f}s  "
                  f"val NDCG@10 {e['val_ndcg_10']:.4f}  HR@10 {e['val_hit_10']:.4f}", flush=True)
            return score, result

    trainer = TimedTrainer(config, model)
    fit_start = time.perf_counter()
    trainer.fit(train_data, valid_data, verbose=False, saved=False, show_progress=False)
    train_wall = time.perf_counter() - fit_start

    reached = [e["since_train_start"] for e in epochs if e["val_ndcg_10"] >= args.target_ndcg]
    result = {
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        "numpy": __import__("numpy").__version__,
        "threads": torch.get_num_threads(),
        "device": str(config["device"]),
        "config": {k: v for k, v in config_dict.items() if k not in ("data_path", "checkpoint_dir")},
        "model_defaults_used": {k: config[k] for k in ("hidden_dropout_prob", "attn_dropout_prob", "hidden_act",
                                                       "initializer_range", "learner", "weight_decay")},
        "recbole_dataset": {**counts,
                            "train_sequences_after_prefix_augmentation": len(train_data._dataset),
                            "train_batches_per_epoch": len(train_data),
                            "valid_users": len(valid_data._dataset)},
        "parameters": sum(p.numel() for p in model.parameters()),
        "setup_seconds": setup_seconds,
        "train_wall_seconds": train_wall,
        "epochs": epochs,
        "seconds_to_target": reached[0] if reached else None,
    }
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
