"""Gated multi-view fusion classifier (seed 004): classification + contrastive + encoder losses.

Not a ranking model: ModelEntry(ranking=False); data come from trainables.multiview (the
embedded synthetic multi-view generator, or a manifest of per-view feature files + labels), and
`evaluate(split)` returns macro-F1, accuracy and per-class F1 instead of HR/NDCG (the spec's
tuning metric is val_macro_f1).

Model, for V >= 2 views x_1..x_V:
    e_v = MLP_v(x_v)                                    per-view encoders, [B, D]
    g   = sigmoid(W_g [e_1; ...; e_V] + b_g)            gates, [B, V, D]
    f   = sum_v g_v * e_v / sum_v g_v                   gated fusion, [B, D]
    logits = head(f)                                    [B, C]
Losses (trainables.losses):
    cls          classification: ce (NLL of the softmax), bce (one-vs-rest) or focal (gamma),
                 optionally class-weighted (balanced: w_c = n / (C n_c); sqrt: its square root)
    contrastive  InfoNCE between the projections P_v(e_v), averaged over view pairs
    global       reconstruction of every x_v from the fused f through decoder R_v
    inter        inter-modal reconstruction: x_w from e_v (v != w) through the same R_w
    gate_reg     mean (g - 0.5)^2
    total = cls + w_c * contrastive + w_e * (global + inter + gate_reg_weight * gate_reg)
with w_c = contrastive_weight (seed 004: 0.2) and w_e = encoder_weight (seed 004: 0.05, proposal
0.03), both fixed or adapted by trainables.schedules.LossWeighter (weighting: magnitude |
uncertainty, momentum-smoothed and bounded to [weight_min, weight_max] times their base) and
multiplied by the warmup ramp min(1, epoch / warmup_epochs). A base weight of 0 switches its
group off and freezes what only it trains (the projections P_v; the decoders R_v).

Logged every epoch: train_loss, loss_cls, loss_contrastive, loss_global_recon, loss_inter_recon,
loss_gate_reg, weight_contrastive, weight_encoder (in force at the end of the epoch), grad_norm
(mean pre-clipping norm), train_accuracy; and from evaluate on the validation split (prefixed
val_ by trainables.loop.fit): macro_f1, accuracy, f1_class<c>, loss.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainables import losses
from trainables import metrics as M
from trainables.config import bounded, choice
from trainables.errors import TunerError
from trainables.multiview import MultiViewData, classification_metrics
from trainables.loop import Recipe, adam
from trainables.train_config import TrainConfig
from trainables.schedules import WEIGHTINGS, LossWeighter, ramp


@dataclass(frozen=True)
class Config(TrainConfig):
    dim: int = bounded(64, low=1, doc="view embedding / fused dimension")
    hidden: int = bounded(128, low=1, doc="hidden width of encoders and head")
    proj_dim: int = bounded(32, low=1, doc="contrastive projection dimension")
    dropout: float = bounded(0.1, low=0.0, high=0.9)
    cls_loss: str = choice("ce", losses.CLASSIFICATION_LOSSES, "ce (NLL) | bce | focal")
    focal_gamma: float = bounded(2.0, low=0.0, doc="focal loss only (seed 004: 2)")
    class_weights: str = choice("none", ("none", "balanced", "sqrt"), "per-class loss weights from train counts")
    contrastive_weight: float = bounded(0.2, low=0.0, doc="w_c (seed 004: 0.2)")
    temperature: float = bounded(0.1, low=1e-4, doc="InfoNCE temperature")
    encoder_weight: float = bounded(0.05, low=0.0, doc="seed 004: 0.05, proposal 0.03")
    recon_loss: str = choice("mse", ("mse", "smooth_l1"), "seed 004: MSE, proposal SmoothL1")
    gate_reg_weight: float = bounded(0.01, low=0.0, doc="gate regularisation inside the encoder loss (seed 004: 0.01)")
    weighting: str = choice("fixed", WEIGHTINGS, "fixed | magnitude | uncertainty")
    weight_momentum: float = bounded(0.9, low=0.0, high=0.999, doc="magnitude weighting: EMA momentum")
    weight_min: float = bounded(0.1, low=1e-6, doc="adaptive weights stay >= weight_min * base")
    weight_max: float = bounded(10.0, low=1e-6, doc="adaptive weights stay <= weight_max * base")
    warmup_epochs: int = bounded(0, low=0, doc="linear ramp of the auxiliary weights")
    # low=2: the contrastive term contrasts a sample's views against the other samples of its batch.
    # 128 and 30 epochs: a few thousand samples make few steps per epoch at the base's 256
    # (search_spaces/fusion_classifier.yaml also fixes 30 epochs)
    batch_size: int = bounded(128, low=2)
    epochs: int = bounded(30, low=1)


def validate(cfg: Config) -> None:
    if cfg.weight_min > cfg.weight_max:
        raise TunerError(f"weight_min {cfg.weight_min} > weight_max {cfg.weight_max}")


def metric_names(ks) -> list[str]:
    return ["val_macro_f1", "val_accuracy", "val_loss", "train_loss"]


def load_data(spec) -> MultiViewData:
    from trainables.multiview import dataset_for

    return dataset_for(spec)


def _mlp(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, d_out))


class GatedFusion(nn.Module):
    def __init__(self, cfg: Config, view_dims: tuple[int, ...], n_classes: int):
        super().__init__()
        v, d = len(view_dims), cfg.dim
        self.encoders = nn.ModuleList(_mlp(x, cfg.hidden, d, cfg.dropout) for x in view_dims)
        self.gate = nn.Linear(v * d, v * d)
        self.head = _mlp(d, cfg.hidden, n_classes, cfg.dropout)
        self.projections = nn.ModuleList(nn.Linear(d, cfg.proj_dim) for _ in view_dims)  # contrastive only
        self.decoders = nn.ModuleList(nn.Linear(d, x) for x in view_dims)  # reconstruction only
        self.weighter = LossWeighter({"contrastive": cfg.contrastive_weight, "encoder": cfg.encoder_weight},
                                     cfg.weighting, cfg.weight_momentum, cfg.weight_min, cfg.weight_max)

    def forward(self, xs: list[torch.Tensor]):
        e = torch.stack([enc(x) for enc, x in zip(self.encoders, xs)], dim=1)  # [B, V, D]
        g = torch.sigmoid(self.gate(e.flatten(1))).view_as(e)  # [B, V, D]
        fused = (g * e).sum(1) / g.sum(1).clamp(min=1e-6)
        return self.head(fused), e, g, fused


class FusionRecipe(Recipe):  # a classifier: evaluate, no score_users (trainables.loop.RankingRecipe)
    def __init__(self, cfg: Config, data: MultiViewData, device: torch.device):
        super().__init__(cfg, data, device)
        if not isinstance(data, MultiViewData):
            raise TunerError("model fusion_classifier needs multi-view classification data (trainables.multiview)")
        self.model = GatedFusion(cfg, data.view_dims, data.n_classes).to(device)
        self.optimizer = adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.tensors = {s: ([torch.as_tensor(x, device=device) for x in xs], torch.as_tensor(y, device=device))
                        for s in ("train", "valid", "test") for xs, y in [data.split(s)]}
        counts = data.class_counts("train").astype(np.float64)
        if cfg.class_weights == "none":
            self.class_weights = None
        else:
            w = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
            w = np.sqrt(w) if cfg.class_weights == "sqrt" else w
            self.class_weights = torch.as_tensor(w, dtype=torch.float32, device=device)
        m = self.model
        m.projections.requires_grad_(cfg.contrastive_weight > 0)
        m.decoders.requires_grad_(cfg.encoder_weight > 0)
        self.pairs = list(itertools.combinations(range(len(data.view_dims)), 2))

    def _cls(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return losses.classification(logits, y, c.cls_loss, self.class_weights, c.focal_gamma)

    def _terms(self, xs, y):
        m, c = self.model, self.cfg
        logits, e, g, fused = m(xs)
        out = {"cls": self._cls(logits, y)}
        if e.shape[0] >= 2:
            out["contrastive"] = torch.stack([
                losses.view_info_nce(m.projections[a](e[:, a]), m.projections[b](e[:, b]), c.temperature)
                for a, b in self.pairs]).mean()
        else:
            out["contrastive"] = torch.zeros((), device=e.device)
        n = len(xs)
        out["global_recon"] = torch.stack([losses.reconstruction(m.decoders[v](fused), xs[v], c.recon_loss)
                                           for v in range(n)]).mean()
        out["inter_recon"] = torch.stack([losses.reconstruction(m.decoders[w](e[:, v]), xs[w], c.recon_loss)
                                          for v in range(n) for w in range(n) if v != w]).mean()
        out["gate_reg"] = losses.gate_regularization(g)
        return out, logits

    def train_epoch(self, epoch: int, gen: torch.Generator) -> dict[str, float]:
        cfg, m = self.cfg, self.model
        xs_all, y_all = self.tensors["train"]
        r = ramp(epoch, cfg.warmup_epochs)
        params = [p for p in m.parameters() if p.requires_grad]
        order = torch.randperm(y_all.shape[0], generator=gen, device=self.device)
        names = ("train_loss", "loss_cls", "loss_contrastive", "loss_global_recon", "loss_inter_recon", "loss_gate_reg")
        sums = {k: torch.zeros((), device=self.device) for k in names}
        correct, grad_sum, steps = 0, 0.0, 0
        for step, start in enumerate(range(0, order.shape[0], cfg.batch_size)):
            idx = order[start : start + cfg.batch_size]
            xs, y = [x[idx] for x in xs_all], y_all[idx]
            t, logits = self._terms(xs, y)
            encoder = t["global_recon"] + t["inter_recon"] + cfg.gate_reg_weight * t["gate_reg"]
            total = t["cls"] + m.weighter.combine({"contrastive": t["contrastive"], "encoder": encoder}, t["cls"], r)
            gnorm = []  # the total gradient norm before clipping, logged as grad_norm

            def measure():
                gnorm.append(torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None])))
                self.check_finite(gnorm[0], epoch, step)

            self.optimize(total, epoch, step, measure)
            m.weighter.clamp_()
            grad_sum += float(gnorm[0])
            correct += int((logits.argmax(1) == y).sum())
            values = (total, t["cls"], t["contrastive"], t["global_recon"], t["inter_recon"], t["gate_reg"])
            for k, v in zip(names, values):
                sums[k] += v.detach()
            steps += 1
        out = {k: (v / max(steps, 1)).item() for k, v in sums.items()}
        out.update({f"weight_{k}": v for k, v in m.weighter.weights(r).items()})
        out["grad_norm"] = grad_sum / max(steps, 1)
        out["train_accuracy"] = correct / max(int(y_all.shape[0]), 1)
        return out

    @torch.no_grad()
    def evaluate(self, split: str, ks=(10, 20), batch_users: int = M.EVAL_BATCH_USERS) -> dict[str, float]:
        """macro_f1, accuracy, f1_class<c> and loss (the classification loss) on `split`."""
        xs_all, y_all = self.tensors[split]
        preds, loss_sum = [], 0.0
        for start in range(0, y_all.shape[0], batch_users):
            xs = [x[start : start + batch_users] for x in xs_all]
            logits = self.model(xs)[0]
            y = y_all[start : start + batch_users]
            loss_sum += float(self._cls(logits, y)) * y.shape[0]
            preds.append(logits.argmax(1))
        pred = torch.cat(preds).cpu().numpy() if preds else np.zeros(0, dtype=np.int64)
        out = classification_metrics(y_all.cpu().numpy(), pred, self.data.n_classes)
        out["loss"] = loss_sum / max(int(y_all.shape[0]), 1)
        return out
