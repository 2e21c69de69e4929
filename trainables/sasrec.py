"""SASRec (Kang & McAuley, 2018): causal self-attention over a user's item sequence.

The model returns hidden states [B, L, d], one per position; losses live outside it (as in
SASRec.pytorch): the state at position t scores candidates for item t+1 through a similarity head
(trainables/similarity.py) against the shared item embedding table.

Knobs (Config; every default below is the only default):
- architecture: maxlen, hidden_units, num_blocks, num_heads, dropout, norm_first
  (pre-LN: x + f(LN(x)) with a final LayerNorm; post-LN: LN(x + f(x)), the original Transformer);
- loss: every trainables.losses.RANKING_LOSSES entry that lists "sasrec", called by its kind:
    sampled: `num_negatives` sampled negatives per position (gbce: calibration `gbce_t`, its own knob);
    full: softmax over the catalogue at non-padded positions, computed block by block on the
        similarity head's factors (the entry's `linear`): the [positions x N] logits never exist;
    inbatch: softmax over the batch's distinct target items (in-batch negatives), optional
        logQ correction (`logq_correction`) with log training frequency;
- negatives (sampled losses): sampler uniform | popularity | mixed, pop_power, popular_ratio,
  exclude_seen (trainables/negatives.py), shared_negatives (one draw per batch, masked per position);
- similarity: dot | cosine | scaled_dot | bilinear | adaptive (+ fusion_* initial values).

Cross-field rules (validate(), run on every config before training; TunerError):
- hidden_units must be divisible by num_heads;
- knobs of a feature that is off must stay at their defaults, so a sweep never logs a value that
  did nothing: num_negatives / sampler / pop_power / popular_ratio / exclude_seen /
  shared_negatives only with a sampled loss; pop_power only with sampler popularity|mixed; popular_ratio only with mixed; a
  loss's own knobs (entry.knobs: gbce_t, logq_correction) only with that loss; fusion_* only
  with similarity adaptive;
- a loss whose entry says bounded_logits_ok=False (gbce) with similarity cosine is rejected:
  gBCE exists to calibrate unbounded logits, so that
  sigmoid(s+)^beta tracks the softmax probability of the positive (~1/N); cosine scores are
  bounded to [-1, 1], sigmoid(s) is stuck in [0.27, 0.73], and the calibration it pays beta for
  cannot happen (it reduces to down-weighting positives). Other losses with cosine are kept:
  they still rank, if with the bounded-logit handicap of seed 000.

Training: one left-padded window per user, the last maxlen+1 training items, prepared once as
tensors; an epoch visits every user once in random order (batches by tensor indexing). Leading
columns that are padding in every row of a batch are dropped (positions stay right-aligned), and
with `bucket_by_length` the random order is sorted by length inside windows of 32 batches and
the batches shuffled again, so a batch rarely pays for one long sequence: on Beauty (median 6
items, maxlen 50) most of a random batch would be padding. Evaluation runs every user through the
model sorted by length (sub-batches of 256), then ranks the catalogue in blocks of users.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables import metrics as M
from trainables.config import bounded, choice
from trainables.data import Dataset
from trainables.errors import TunerError
from trainables.losses import (FULL, INBATCH, SAMPLED, accepted, check_loss_knobs, get_ranking_loss, loss_doc,
                               sampled_losses)
from trainables.loop import RankingRecipe, adam
from trainables.train_config import TrainConfig
from trainables.negatives import SAMPLERS, NegativeSampler, check_negative_knobs, check_unused
from trainables.similarity import SIMILARITIES, make_similarity

@dataclass(frozen=True)
class Config(TrainConfig):
    loss: str = choice("bce", lambda: accepted("sasrec"), loss_doc("sasrec"))
    num_negatives: int = bounded(1, low=1, doc="negatives per position (sampled losses)")
    sampler: str = choice("uniform", SAMPLERS, "negative sampler (sampled losses)")
    pop_power: float = bounded(1.0, low=0.0, doc="popularity sampler: q ~ train_count ** pop_power")
    popular_ratio: float = bounded(0.3, low=0.0, high=1.0, doc="mixed sampler: share of popularity draws (seed 003: 0.3)")
    exclude_seen: bool = True  # never draw a user's training items as negatives (SASRec.pytorch)
    # sampled losses: one set of num_negatives per batch, shared by every position and scored by one
    # matmul (TensorFlow's sampled_softmax_loss); a position's own target and (exclude_seen) its
    # user's training items among them are masked out. Per-position draws cost P x K gathers: 11x
    # full CE's epoch at K = 1024 on Beauty, one CPU thread
    shared_negatives: bool = False
    gbce_t: float = bounded(0.75, low=0.0, high=1.0, doc="gBCE calibration t (gSASRec: 0.75)")
    logq_correction: bool = False  # infonce: subtract log training frequency of candidates
    similarity: str = choice("dot", SIMILARITIES, "dot | cosine | scaled_dot | bilinear | adaptive")
    fusion_alpha: float = 0.5  # adaptive: initial dot weight (seed 003)
    fusion_beta: float = 0.3  # adaptive: initial cosine weight (seed 003)
    fusion_gamma: float = 0.2  # adaptive: initial scaled-dot weight (seed 003)
    fusion_temperature: float = bounded(1.0, low=1e-6, doc="adaptive: initial temperature multiplier (seed 003)")
    maxlen: int = bounded(50, low=1)
    hidden_units: int = bounded(64, low=1)
    num_blocks: int = bounded(2, low=1)
    num_heads: int = bounded(2, low=1)
    dropout: float = bounded(0.2, low=0.0, high=0.95)
    norm_first: bool = True  # pre-LN (SASRec.pytorch) vs post-LN
    bucket_by_length: bool = True  # batch users of similar length (within 32-batch windows) so padding is trimmed
    # one example per user (a whole sequence), so an epoch is few steps: more epochs than the base
    epochs: int = bounded(50, low=1)


_FUSION_KNOBS = ("fusion_alpha", "fusion_beta", "fusion_gamma", "fusion_temperature")


def validate(cfg: Config) -> None:
    default = Config()
    if cfg.hidden_units % cfg.num_heads:
        raise TunerError(f"num_heads: {cfg.num_heads} does not divide hidden_units {cfg.hidden_units}")
    loss = check_loss_knobs(cfg, default, "sasrec")
    check_negative_knobs(cfg, default, loss.kind == SAMPLED, "num_negatives",
                         f"with loss {cfg.loss} (only {sampled_losses('sasrec')} draw negatives)")
    if loss.kind != SAMPLED:
        check_unused(cfg, default, ("shared_negatives",), f"with loss {cfg.loss} (only {sampled_losses('sasrec')} "
                                                          "draw negatives)")
    if cfg.similarity != "adaptive":
        check_unused(cfg, default, _FUSION_KNOBS, f"with similarity {cfg.similarity} (only adaptive)")
    if not loss.bounded_logits_ok and cfg.similarity == "cosine":
        raise TunerError(
            f"similarity cosine with loss {cfg.loss}: it calibrates unbounded logits (gBCE: sigmoid(s)^beta ~ P(item)); "
            "cosine scores are bounded to [-1, 1], so there is nothing to calibrate. Use dot, scaled_dot, bilinear "
            "or adaptive, or another loss"
        )


def left_padded(indptr: np.ndarray, items: np.ndarray, length: int, pad: int) -> np.ndarray:
    """CSR sequences -> int64 [U, length]: each row's last `length` items, right-aligned, `pad` before."""
    indptr = np.asarray(indptr, dtype=np.int64)
    n = np.diff(indptr)
    take = np.minimum(n, length)
    out = np.full((len(n), length), pad, dtype=np.int64)
    rows = np.repeat(np.arange(len(n)), take)
    offset = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)  # 0..take-1 per row
    out[rows, length - np.repeat(take, take) + offset] = items[np.repeat(indptr[1:] - take, take) + offset]
    return out


def split_histories(data: Dataset, split: str, length: int, device: torch.device) -> torch.Tensor:
    """[U, length] left-padded histories every user has before `split`'s target, on `device`."""
    indptr, items = data.sequences(split)
    return torch.as_tensor(left_padded(indptr, items, length, data.n_items), device=device)


class Block(nn.Module):
    """Causal multi-head self-attention + position-wise feed-forward, pre- or post-LN."""

    def __init__(self, d: int, heads: int, dropout: float, norm_first: bool):
        super().__init__()
        self.heads, self.p, self.norm_first = heads, dropout, norm_first
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-8), nn.LayerNorm(d, eps=1e-8)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d))
        self.drop = nn.Dropout(dropout)

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, l, d = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0)
        return self.out(o.transpose(1, 2).reshape(b, l, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.drop(self.attention(self.ln1(x), mask))
            return x + self.drop(self.ff(self.ln2(x)))
        x = self.ln1(x + self.drop(self.attention(x, mask)))
        return self.ln2(x + self.drop(self.ff(x)))


class SASRec(nn.Module):
    """Item ids [B, L] (left-padded with n_items) -> hidden states [B, L, d]."""

    def __init__(self, n_items: int, cfg: Config):
        super().__init__()
        d = cfg.hidden_units
        self.pad, self.maxlen, self.scale = n_items, cfg.maxlen, math.sqrt(d)
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=n_items)
        self.pos_emb = nn.Embedding(cfg.maxlen, d)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.num_heads, cfg.dropout, cfg.norm_first) for _ in range(cfg.num_blocks))
        self.final_ln = nn.LayerNorm(d, eps=1e-8) if cfg.norm_first else nn.Identity()
        nn.init.xavier_normal_(self.item_emb.weight)
        nn.init.xavier_normal_(self.pos_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[n_items].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        b, l = seq.shape
        keep = (seq != self.pad)[..., None]  # [B, L, 1]
        pos = torch.arange(self.maxlen - l, self.maxlen, device=seq.device)  # right-aligned positions
        x = self.emb_drop(self.item_emb(seq) * self.scale + self.pos_emb(pos)) * keep
        # attend to earlier non-padded positions; every position may attend to itself (no empty rows)
        causal = torch.ones(l, l, dtype=torch.bool, device=seq.device).tril()
        mask = (causal & (keep[:, None, :, 0] | torch.eye(l, dtype=torch.bool, device=seq.device)))[:, None]
        for block in self.blocks:
            x = block(x, mask) * keep
        return self.final_ln(x)


def _trim(seq: torch.Tensor, pad: int) -> torch.Tensor:
    """Drop leading columns that are padding in every row (positions stay right-aligned)."""
    nonpad = (seq != pad).any(0)
    first = int(nonpad.float().argmax()) if bool(nonpad.any()) else seq.shape[1] - 1
    return seq[:, first:]


class SASRecRecipe(RankingRecipe):
    def __init__(self, cfg: Config, data: Dataset, device: torch.device):
        super().__init__(cfg, data, device)
        n = data.n_items
        self.loss = get_ranking_loss(cfg.loss, "sasrec")
        self.model = SASRec(n, cfg).to(device)
        self.sim = make_similarity(cfg.similarity, cfg.hidden_units, alpha=cfg.fusion_alpha, beta=cfg.fusion_beta,
                                   gamma=cfg.fusion_gamma, temperature=cfg.fusion_temperature).to(device)
        self.model.sim = self.sim  # registered submodule: its parameters train and checkpoint with the model
        self.optimizer = adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # one window per user: the last maxlen + 1 training items -> inputs [:, :-1], targets [:, 1:]
        window = torch.as_tensor(left_padded(data.train_indptr, data.train_items, cfg.maxlen + 1, n), device=device)
        self.inputs, self.targets = window[:, :-1].contiguous(), window[:, 1:].contiguous()
        self.lengths = (self.inputs != n).sum(1)  # [U] training positions per user
        self.train_rows = torch.nonzero(self.lengths > 0).squeeze(1)  # users with >= 2 training items
        self.sampler = None
        if self.loss.kind == SAMPLED:
            self.sampler = NegativeSampler(cfg.sampler, data.train_counts(), pop_power=cfg.pop_power,
                                           popular_ratio=cfg.popular_ratio, device=device,
                                           seen=(data.train_indptr, data.train_items) if cfg.exclude_seen else None)
        self.loss_kwargs = self.loss.extra(cfg, n) if self.loss.extra else {}  # e.g. gbce's beta
        counts = torch.as_tensor(data.train_counts(), dtype=torch.float64, device=device)
        self.log_freq = torch.log(counts.clamp(min=1) / counts.sum()).float()  # logQ of in-batch sampling
        self._eval_seqs: dict[str, torch.Tensor] = {}

    # --- training ---------------------------------------------------------------------------

    def batch_loss(self, inputs: torch.Tensor, targets: torch.Tensor, users: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Loss of one batch of windows: inputs/targets [B, L], users [B]."""
        n, cfg = self.data.n_items, self.cfg
        inputs = _trim(inputs, n)
        targets = targets[:, targets.shape[1] - inputs.shape[1]:]
        mask = inputs != n  # [B, L]
        h = self.model(inputs)[mask]  # [P, d]: states at non-padded positions only
        t = targets[mask]  # [P]
        emb = self.model.item_emb
        if self.loss.kind == SAMPLED:
            rows = users[:, None].expand_as(mask)[mask] if self.sampler.seen_keys is not None else None
            pos = self.sim.pair(h, emb(t))  # [P]
            if cfg.shared_negatives:
                return self.loss.fn(pos, self.shared_negative_logits(h, t, rows, gen), **self.loss_kwargs)
            neg = self.sampler.sample(t.shape[0], cfg.num_negatives, gen, users=rows)  # [P, K]
            negs = self.sim.pair(h[:, None, :], emb(neg))  # [P, K]
            return self.loss.fn(pos, negs, **self.loss_kwargs)
        if self.loss.kind == INBATCH:
            pool, inv = torch.unique(t, return_inverse=True)  # [M], [P]
            logits = self.sim.matrix(h, emb(pool))  # [P, M]
            return self.loss.fn(logits, inv, self.log_freq[pool] if cfg.logq_correction else None)
        assert self.loss.kind == FULL, self.loss.kind
        return self.full_ce(h, t)

    def shared_negative_logits(self, h: torch.Tensor, t: torch.Tensor, rows: torch.Tensor | None,
                               gen: torch.Generator) -> torch.Tensor:
        """[P, K] logits of one batch-wide draw of K negatives; -inf where a negative is the position's
        target or (rows [P] given: exclude_seen) one of its user's training items, so it drops out of
        every sampled loss (softplus(-inf) = 0, exp(-inf) = 0)."""
        neg = self.sampler.sample(1, self.cfg.num_negatives, gen)[0]  # [K]
        logits = self.sim.matrix(h, self.model.item_emb(neg))  # [P, K]
        hit = neg[None, :] == t[:, None]  # [P, K]
        if rows is not None:
            hit |= self.sampler.is_seen(rows[:, None].expand_as(hit), neg[None, :].expand_as(hit))
        return logits.masked_fill(hit, float("-inf"))

    def full_ce(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Softmax CE over all N items at P positions, blockwise on the head's factors (no [P, N] logits)."""
        return self.loss.linear(*self.sim.factors(h, self.model.item_emb.weight[: self.data.n_items]), t)

    def batches(self, gen: torch.Generator) -> list[torch.Tensor]:
        """One epoch of user batches: random order, optionally length-bucketed (see module doc)."""
        bs = self.cfg.batch_size
        rows = self.train_rows[torch.randperm(self.train_rows.shape[0], generator=gen, device=self.device)]
        if not self.cfg.bucket_by_length:
            return list(rows.split(bs))
        window = 32 * bs
        out = []
        for w in rows.split(window):
            w = w[torch.argsort(self.lengths[w], stable=True)]
            out.extend(w.split(bs))
        order = torch.randperm(len(out), generator=gen, device=self.device).tolist()
        return [out[i] for i in order]

    def train_epoch(self, epoch: int, gen: torch.Generator) -> dict[str, float]:
        total = torch.zeros((), device=self.device)
        steps = 0
        for step, u in enumerate(self.batches(gen)):
            loss = self.batch_loss(self.inputs[u], self.targets[u], u, gen)
            total += self.optimize(loss, epoch, step)
            steps += 1
        return {"train_loss": (total / max(steps, 1)).item()}

    # --- evaluation --------------------------------------------------------------------------

    def eval_sequences(self, split: str) -> torch.Tensor:
        """[U, maxlen] left-padded histories the model sees before `split`'s target (cached)."""
        if split not in self._eval_seqs:
            self._eval_seqs[split] = split_histories(self.data, split, self.cfg.maxlen, self.device)
        return self._eval_seqs[split]

    @torch.no_grad()
    def user_states(self, split: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """[B, d] states after each user's whole history, users start..stop-1, in user order.

        Users run through the model sorted by history length, 256 at a time, so each sub-batch is
        trimmed to its own longest history: over all of Beauty's users at once (median 6 items,
        maxlen 50) that is 6x less work than sorting within each evaluation block of 128.
        """
        n = self.data.n_items
        seq = self.eval_sequences(split)[start:stop]  # [B, maxlen]
        order = torch.argsort((seq != n).sum(1), stable=True)
        h = torch.empty(seq.shape[0], self.cfg.hidden_units, device=self.device)
        for idx in order.split(256):
            h[idx] = self.model(_trim(seq[idx], n))[:, -1, :]
        return h

    @torch.no_grad()
    def score_users(self, split: str, start: int, stop: int) -> torch.Tensor:
        return self.sim.matrix(self.user_states(split, start, stop), self.model.item_emb.weight[: self.data.n_items])

    @torch.no_grad()
    def evaluate(self, split: str, ks=(10, 20), batch_users: int = M.EVAL_BATCH_USERS) -> dict[str, float]:
        h = self.user_states(split)  # every user's state first, then rank in cache-sized blocks
        table = self.model.item_emb.weight[: self.data.n_items]
        return M.evaluate(lambda a, b: self.sim.matrix(h[a:b], table), self.data.split(split), ks, batch_users, self.device)

    def extra_metrics(self) -> dict[str, float]:
        return self.sim.metrics()
