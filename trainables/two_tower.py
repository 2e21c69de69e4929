"""Two-tower retrieval model (seeds 000, 001): score(u, i) = cos(user_tower(u), item_tower(i)) * s.

- user tower: user id embedding, optionally concatenated with the mean of the user's most recent
  `history_len` training items (`use_history`; for a training interaction only the items before
  it, so the target never leaks into its own input), then an MLP;
- item tower: item id embedding, optionally concatenated with a linear projection of the item's
  content features (`use_item_features`, Dataset.item_features), then an MLP;
- both outputs are L2-normalised, so a raw score is a cosine in [-1, 1] and the logit scale s
  sets the range of the logits. Seed 000's "loss stuck at 0.3133" is this range: BCE on a
  positive is softplus(-s*cos) >= softplus(-s), = log(1 + e^-1) = 0.3133 for s = 1.
  `learn_logit_scale`: s = exp(log_s) with log_s a parameter, clamped to [ln 0.01, ln 100]
  inside forward (CLIP's bounds; never by overwriting .data), optionally trained with its own
  learning rate `logit_scale_lr` (own param group, no weight decay); otherwise s is fixed.
  Initial s `logit_scale`: seed 000 recommends 10 ("5-20"), seed 001 went back to 1.0.
  The current s is reported every epoch (extra_metrics: logit_scale).

Losses: every trainables.losses.RANKING_LOSSES entry that lists "two_tower", called by its kind:
sampled (e.g. bce) with `num_negatives` negatives per positive (seed 001: 1 -> 5; the old name
neg_ratio still reads, with a deprecation line), or inbatch (infonce): softmax against the batch's
other positives, with `logq_correction` subtracting each candidate's log training frequency.
Negatives come from trainables/negatives.py. extra_metrics reports the entry's `floor` at the
current logit scale, when it has one.
Validation is the loop's full-catalogue ranking (seed 001's "MSE on positives" measured nothing).
Every epoch also reports train_pos_bce, the mean softplus(-score) of the positives.

Cross-field rules (validate()): sampler knobs only with a sampled loss, pop_power only with
popularity|mixed, popular_ratio only with mixed; a loss's own knobs (entry.knobs: logq_correction)
only with that loss; logit_scale_lr only with learn_logit_scale; history_len only
with use_history. use_item_features on a dataset without item features fails when the trial starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import bounded, choice
from trainables.data import Dataset
from trainables.errors import TunerError
from trainables.losses import INBATCH, SAMPLED, accepted, check_loss_knobs, get_ranking_loss, loss_doc, sampled_losses
from trainables.loop import RankingRecipe, adam
from trainables.train_config import TrainConfig
from trainables.negatives import SAMPLERS, NegativeSampler, check_negative_knobs, check_unused
from trainables.sasrec import split_histories

LOG_SCALE_MIN, LOG_SCALE_MAX = math.log(0.01), math.log(100.0)


@dataclass(frozen=True)
class Config(TrainConfig):
    loss: str = choice("bce", lambda: accepted("two_tower"), loss_doc("two_tower") + "; bce_positives is "
                       "seed 000's bug: no negatives, reproduces the 0.3133 floor")
    num_negatives: int = bounded(5, low=1, doc="sampled negatives per positive (seed 001: 1 -> 5; range 1-10)",
                                 aliases=("neg_ratio",))
    sampler: str = choice("uniform", SAMPLERS, "negative sampler (sampled losses)")
    pop_power: float = bounded(1.0, low=0.0, doc="popularity sampler: q ~ train_count ** pop_power")
    popular_ratio: float = bounded(0.3, low=0.0, high=1.0, doc="mixed sampler: share of popularity draws")
    exclude_seen: bool = True  # never draw a user's training items as negatives
    logq_correction: bool = False  # infonce: subtract log training frequency of candidates
    logit_scale: float = bounded(10.0, low=0.01, high=100.0, doc="initial/fixed scale s (seed 000: 10, 5-20; seed 001: 1)")
    learn_logit_scale: bool = True
    logit_scale_lr: float | None = bounded(None, low=0.0, doc="own learning rate of log s (default: lr)")
    embed_dim: int = bounded(64, low=1)
    use_history: bool = True
    history_len: int = bounded(20, low=1, doc="recent training items mean-pooled into the user tower")
    use_item_features: bool = False
    tower_layers: int = bounded(1, low=0, doc="hidden layers of each tower MLP (0: one linear layer)")
    tower_hidden: int = bounded(128, low=1)
    out_dim: int = bounded(64, low=1)
    dropout: float = bounded(0.0, low=0.0, high=0.95)
    # one interaction per example (not a user's sequence): larger batches than the base's 256,
    # which also give infonce more in-batch candidates
    batch_size: int = bounded(1024, low=1)


def validate(cfg: Config) -> None:
    default = Config()
    sampled = check_loss_knobs(cfg, default, "two_tower").kind == SAMPLED
    check_negative_knobs(cfg, default, sampled, "num_negatives",
                         f"with loss {cfg.loss} (only {sampled_losses('two_tower')} draw negatives)")
    if not cfg.learn_logit_scale:
        check_unused(cfg, default, ("logit_scale_lr",), "with learn_logit_scale: false (the scale is fixed)")
    if not cfg.use_history:
        check_unused(cfg, default, ("history_len",), "with use_history: false")


def mlp(d_in: int, hidden: int, layers: int, d_out: int, dropout: float) -> nn.Sequential:
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout)]
        d_in = hidden
    mods.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*mods)


class TwoTower(nn.Module):
    def __init__(self, n_users: int, n_items: int, cfg: Config, item_features: np.ndarray | None):
        super().__init__()
        e = cfg.embed_dim
        self.pad = n_items
        self.user_emb = nn.Embedding(n_users, e)
        self.item_emb = nn.Embedding(n_items, e)
        self.hist_emb = nn.Embedding(n_items + 1, e, padding_idx=n_items) if cfg.use_history else None
        if item_features is not None:
            self.register_buffer("features", torch.as_tensor(item_features, dtype=torch.float32), persistent=False)
            self.feat_proj = nn.Linear(self.features.shape[1], e)
        else:
            self.features, self.feat_proj = None, None
        self.user_mlp = mlp(e * (2 if cfg.use_history else 1), cfg.tower_hidden, cfg.tower_layers, cfg.out_dim, cfg.dropout)
        self.item_mlp = mlp(e * (2 if item_features is not None else 1), cfg.tower_hidden, cfg.tower_layers, cfg.out_dim, cfg.dropout)
        for emb in (self.user_emb, self.item_emb, self.hist_emb):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.1)
        if self.hist_emb is not None:
            with torch.no_grad():
                self.hist_emb.weight[n_items].zero_()
        log_s = torch.tensor(math.log(cfg.logit_scale))
        if cfg.learn_logit_scale:
            self.log_scale = nn.Parameter(log_s)
        else:
            self.register_buffer("log_scale", log_s)

    def scale(self) -> torch.Tensor:
        """s = exp(clamp(log_s, ln 0.01, ln 100)): clamped in the graph, the parameter itself untouched."""
        return self.log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).exp()

    def users(self, users: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        """users [B], history [B, H] (padded with n_items) -> unit vectors [B, out_dim]."""
        x = self.user_emb(users)
        if self.hist_emb is not None:
            keep = (history != self.pad).float()
            pooled = self.hist_emb(history).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
            x = torch.cat([x, pooled], dim=-1)
        return F.normalize(self.user_mlp(x), dim=-1)

    def items(self, items: torch.Tensor) -> torch.Tensor:
        """item ids of any shape [...] -> unit vectors [..., out_dim]."""
        x = self.item_emb(items)
        if self.feat_proj is not None:
            x = torch.cat([x, self.feat_proj(self.features[items])], dim=-1)
        return F.normalize(self.item_mlp(x), dim=-1)


def history_before(indptr: np.ndarray, items: np.ndarray, length: int, pad: int) -> np.ndarray:
    """int64 [nnz, length]: for each training interaction, the user's `length` items before it."""
    nnz = len(items)
    users = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    rank = np.arange(nnz) - indptr[users]  # position within the user's sequence
    out = np.full((nnz, length), pad, dtype=np.int64)
    for o in range(1, length + 1):  # one vectorised pass per offset, not per interaction
        ok = rank >= o
        out[ok, length - o] = items[np.flatnonzero(ok) - o]
    return out


class TwoTowerRecipe(RankingRecipe):
    def __init__(self, cfg: Config, data: Dataset, device: torch.device):
        super().__init__(cfg, data, device)
        features = None
        if cfg.use_item_features:
            if data.item_features is None:
                raise TunerError(f"use_item_features: dataset {data.name} has no item features "
                                 "(set data.item_attributes in the spec, or use_item_features: false)")
            features = data.item_features
        self.model = TwoTower(data.n_users, data.n_items, cfg, features).to(device)
        self.loss = get_ranking_loss(cfg.loss, "two_tower")
        self.loss_kwargs = self.loss.extra(cfg, data.n_items) if self.loss.extra else {}
        scale = [p for name, p in self.model.named_parameters() if name == "log_scale"]
        rest = [p for name, p in self.model.named_parameters() if name != "log_scale"]
        groups = [{"params": rest}]
        if scale:
            groups.append({"params": scale, "weight_decay": 0.0,
                           "lr": cfg.lr if cfg.logit_scale_lr is None else cfg.logit_scale_lr})
        self.optimizer = adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.users = torch.as_tensor(data.train_users(), device=device)  # [nnz]
        self.items = torch.as_tensor(data.train_items, device=device)  # [nnz]
        self.history = None
        if cfg.use_history:
            self.history = torch.as_tensor(
                history_before(data.train_indptr, data.train_items, cfg.history_len, data.n_items), device=device)
        self.sampler = None
        if self.loss.kind == SAMPLED:
            self.sampler = NegativeSampler(cfg.sampler, data.train_counts(), pop_power=cfg.pop_power,
                                           popular_ratio=cfg.popular_ratio, device=device,
                                           seen=(data.train_indptr, data.train_items) if cfg.exclude_seen else None)
        counts = torch.as_tensor(data.train_counts(), dtype=torch.float64, device=device)
        self.log_freq = torch.log(counts.clamp(min=1) / counts.sum()).float()
        self._eval_hist: dict[str, torch.Tensor] = {}

    def batch_scores(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, positive scores [B]) for training interactions idx [B]."""
        m, cfg = self.model, self.cfg
        u, i = self.users[idx], self.items[idx]
        q = m.users(u, self.history[idx] if self.history is not None else None)  # [B, D]
        s = m.scale()
        if self.loss.kind == SAMPLED:
            neg = self.sampler.sample(idx.shape[0], cfg.num_negatives, gen, users=u)  # [B, K]
            pos = s * (q * m.items(i)).sum(-1)  # [B]
            negs = s * (q[:, None, :] * m.items(neg)).sum(-1)  # [B, K]
            return self.loss.fn(pos, negs, **self.loss_kwargs), pos
        assert self.loss.kind == INBATCH, f"two_tower has no {self.loss.kind} loss"  # no full-catalogue CE here
        pool, inv = torch.unique(i, return_inverse=True)  # in-batch candidates [M], targets [B]
        logits = s * q @ m.items(pool).T  # [B, M]
        loss = self.loss.fn(logits, inv, self.log_freq[pool] if cfg.logq_correction else None)
        return loss, logits.gather(1, inv[:, None]).squeeze(1)

    def train_epoch(self, epoch: int, gen: torch.Generator) -> dict[str, float]:
        order = torch.randperm(self.users.shape[0], generator=gen, device=self.device)
        total = torch.zeros((), device=self.device)
        pos_bce = torch.zeros((), device=self.device)
        steps = 0
        for step, start in enumerate(range(0, order.shape[0], self.cfg.batch_size)):
            loss, pos = self.batch_scores(order[start : start + self.cfg.batch_size], gen)
            total += self.optimize(loss, epoch, step)
            pos_bce += F.softplus(-pos.detach()).mean()
            steps += 1
        return {"train_loss": (total / max(steps, 1)).item(), "train_pos_bce": (pos_bce / max(steps, 1)).item()}

    def eval_history(self, split: str) -> torch.Tensor | None:
        if self.history is None:
            return None
        if split not in self._eval_hist:
            self._eval_hist[split] = split_histories(self.data, split, self.cfg.history_len, self.device)
        return self._eval_hist[split]

    @torch.no_grad()
    def score_users(self, split: str, start: int, stop: int) -> torch.Tensor:
        m = self.model
        hist = self.eval_history(split)
        q = m.users(torch.arange(start, stop, device=self.device), hist[start:stop] if hist is not None else None)
        return m.scale() * q @ m.items(torch.arange(self.data.n_items, device=self.device)).T  # [B, N]

    def extra_metrics(self) -> dict[str, float]:
        s = self.model.scale().item()
        out = {"logit_scale": s, "logit_bound": s}  # |logit| = s * |cos| <= s
        if self.loss.floor is not None:  # the lowest train_loss logits in [-s, s] allow (analysis/diagnose.py)
            out["loss_floor"] = self.loss.floor(s, self.cfg.num_negatives)
        return out
