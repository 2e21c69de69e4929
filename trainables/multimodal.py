"""Multimodal sequential recommender (seed 002): id + content fusion, three auxiliary losses, three phases.

Model
    item i:  v_i = g_i * e_i + (1 - g_i) * c_i   (fusion: gate)   or   v_i = e_i + c_i   (fusion: sum)
             e_i the id embedding, c_i = W_c f_i + b_c the projected content features f_i
             (Dataset.item_features: the planted features of the synthetic data, or the S3-Rec
             attribute multi-hot given by `data.item_attributes`), g_i = sigmoid(W_g [e_i; c_i] + b_g).
    user:    h = W_u mean_j v_j + b_u over the last `max_len` items j of the history (encoder: mean),
             or W_u of a SASRec-style transformer over them (positional embeddings, padding
             masked) read at the most recent item (encoder: transformer).
    score:   s(u, i) = <h_u, v_i> + b_i, over the whole catalogue at evaluation (the default
             full-ranking RankingRecipe.evaluate: HR/NDCG/MRR@K with seen items masked).
    Training examples are all training interactions but each user's first, each predicted from
    the items before it. Rec loss: a RANKING_LOSSES entry listing "multimodal", called by kind: full
    ("ce") is the softmax over the catalogue, sampled ones (seed 002: "bpr") draw `num_negatives`
    (old name n_negatives, deprecated) uniform items per positive (trainables.negatives.NegativeSampler).

Auxiliary losses, on the step's "aux items": its target items plus as many uniform items,
deduplicated. Each has an alpha per phase (trainables.schedules.PhaseSchedule, with a linear
warmup ramp); total = rec + alpha_recon * recon + alpha_causal * causal + alpha_diversity * diversity.
- reconstruction: a decoder (Linear dim -> F; the only parameters this term trains) maps v_i back
  to f_i; trainables.losses.reconstruction with `recon_loss` (auto: bce for 0/1 features, else mse).
- causal (popularity deconfounding): the causal module is a linear popularity probe p(v) = w.v + b
  (trained only by this term). The term is rho^2, the squared Pearson correlation between p(v_i)
  and log(1 + training count of i) over the aux items (trainables.losses.squared_correlation), in
  [0, 1]. A gradient reversal on w makes the probe *maximise* rho^2 (it finds the direction of
  the item vectors most correlated with log popularity) while the item representation
  minimises it: at equilibrium no linear read-out of v predicts popularity, which the model can
  then only express through the item bias b_i, outside the term (the deconfounded interest
  part <h_u, v_i> is decorrelated from popularity).
- diversity: uniformity (Wang & Isola 2020) of the L2-normalised aux item vectors,
  log mean_{i<j} exp(-t ||v_i - v_j||^2), t = uniformity_t, in [-4t, 0]; no own parameters.
An alpha of 0 switches its term off: it leaves the graph (its value is still computed under
no_grad and logged) and the term's own parameters (decoder; probe) get requires_grad False, so
they receive no gradient and the optimizer leaves them alone (seed 002 freezes the causal
module in phase 1, where its alpha is 0).

Logged every epoch (train_epoch's dict): train_loss (the total), loss_rec, loss_recon,
loss_causal, loss_diversity (epoch means, raw values before alphas), alpha_* (in force), phase,
grad_norm (all parameters, before clipping), and on every 10th step the gradient norms of the
rec loss and of the auxiliary sum on the shared item-representation parameters (id embedding,
content projection, gate): rec_grad_norm, aux_grad_norm and grad_ratio = their ratio (seed 002's
rec_grad:aux_grad, "should be > 1"; NaN when every alpha is 0). extra_metrics: gate_mean (mean
id-vs-content gate over the catalogue, gate fusion only). A non-finite loss or gradient norm
raises trainables.loop.NonFiniteLoss("non-finite loss at epoch E, step S") at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainables import losses
from trainables import metrics as M
from trainables.config import bounded, choice
from trainables.data import Dataset
from trainables.errors import TunerError
from trainables.losses import FULL
from trainables.loop import RankingRecipe, adam
from trainables.negatives import NegativeSampler
from trainables.train_config import TrainConfig
from trainables.schedules import PhaseSchedule

AUX = ("recon", "causal", "diversity")
GRAD_EVERY = 10  # steps between measurements of the rec:aux gradient ratio


@dataclass(frozen=True)
class Config(TrainConfig):
    loss: str = choice("bpr", lambda: losses.accepted("multimodal"), "rec loss: " + losses.loss_doc("multimodal"))
    num_negatives: int = bounded(4, low=1, doc="negatives per positive, sampled losses (seed 002: 4)",
                                 aliases=("n_negatives",))
    dim: int = bounded(64, low=1)
    fusion: str = choice("gate", ("gate", "sum"), "id/content fusion")
    encoder: str = choice("mean", ("mean", "transformer"), "user encoder over the history")
    max_len: int = bounded(50, low=1, doc="most recent history items the encoder reads")
    n_layers: int = bounded(1, low=1, doc="transformer encoder only")
    n_heads: int = bounded(2, low=1, doc="transformer encoder only; must divide dim")
    dropout: float = bounded(0.1, low=0.0, high=0.9, doc="transformer encoder only")
    recon_loss: str = choice("auto", ("auto", *losses.RECONSTRUCTION_LOSSES), "auto: bce for 0/1 features")
    uniformity_t: float = bounded(2.0, low=1e-6, doc="temperature of the diversity (uniformity) term")
    # three phases (seed 002's BPR table), each with its own auxiliary weights; phase 3 runs to the end
    phase1_epochs: int = bounded(10, low=0)
    alpha_recon_p1: float = bounded(0.005, low=0.0, doc="item content reconstructed from the fused embedding")
    alpha_causal_p1: float = bounded(0.0, low=0.0, doc="0: causal module frozen in phase 1 (seed 002)")
    alpha_diversity_p1: float = bounded(0.0005, low=0.0, doc="uniformity of the item embeddings")
    phase2_epochs: int = bounded(20, low=0)
    alpha_recon_p2: float = bounded(0.01, low=0.0)
    alpha_causal_p2: float = bounded(0.001, low=0.0)
    alpha_diversity_p2: float = bounded(0.001, low=0.0)
    # phase 3: from epoch phase1_epochs + phase2_epochs + 1 to the end
    alpha_recon_p3: float = bounded(0.002, low=0.0)
    alpha_causal_p3: float = bounded(0.0005, low=0.0)
    alpha_diversity_p3: float = bounded(0.0002, low=0.0)
    warmup_epochs: int = bounded(3, low=0, doc="linear ramp of the auxiliary alphas (seed 002 BPR: 3)")
    # seed 002's schedule: phases 1-10 / 11-30 / 31-50 (phase1_epochs, phase2_epochs) need 50 epochs
    epochs: int = bounded(50, low=1)


def validate(cfg: Config) -> None:
    if cfg.encoder == "transformer" and cfg.dim % cfg.n_heads:
        raise TunerError(f"dim {cfg.dim} must be divisible by n_heads {cfg.n_heads} (encoder: transformer)")


def schedule(cfg: Config) -> PhaseSchedule:
    return PhaseSchedule.from_lengths(
        (cfg.phase1_epochs, cfg.phase2_epochs),
        {a: tuple(getattr(cfg, f"alpha_{a}_p{p}") for p in (1, 2, 3)) for a in AUX},
        cfg.warmup_epochs,
    )


def load_data(spec) -> Dataset:
    """trainables.datasets.dataset_for, insisting on item features (the content modality)."""
    from trainables.datasets import dataset_for

    data = dataset_for(spec)
    if data.item_features is None:
        raise TunerError(f"{spec.path}: model multimodal needs item content features: set "
                         f"data.item_attributes (e.g. Beauty_item2attributes.json) or use source: synthetic")
    return data


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class MultimodalRec(nn.Module):
    def __init__(self, cfg: Config, features: np.ndarray):
        super().__init__()
        n, f = features.shape
        d = cfg.dim
        self.cfg = cfg
        dense = torch.as_tensor(features, dtype=torch.float32)
        nnz = (dense != 0).sum(1)
        k = int(nnz.max()) if n else 0
        if f > 64 and k <= f // 8:  # multi-hot attributes: gather their rows (an embedding bag)
            order = torch.argsort((dense == 0).to(torch.int8), dim=1, stable=True)[:, : max(k, 1)]
            self.attr_idx = order  # [N, K] column ids, nonzeros first
            self.attr_val = dense.gather(1, order)  # [N, K] their values (0 pads)
            self.features = None
        else:
            self.attr_idx = self.attr_val = None
            self.features = dense  # [N, F]
        self.targets = dense  # reconstruction targets; plain attributes: data, not state
        self.item_id = nn.Embedding(n, d)
        self.content_weight = nn.Parameter(torch.empty(f, d).uniform_(-1 / f ** 0.5, 1 / f ** 0.5))
        self.content_bias = nn.Parameter(torch.zeros(d))
        self.gate = nn.Linear(2 * d, d) if cfg.fusion == "gate" else None
        self.item_bias = nn.Embedding(n, 1)
        if cfg.encoder == "transformer":
            self.position = nn.Embedding(cfg.max_len, d)
            layer = nn.TransformerEncoderLayer(d, cfg.n_heads, 2 * d, cfg.dropout, batch_first=True, norm_first=True)
            self.transformer = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        else:
            self.position, self.transformer = None, None
        self.user_proj = nn.Linear(d, d)
        self.decoder = nn.Linear(d, f)  # reconstruction only
        self.pop_probe = nn.Linear(d, 1)  # causal only
        nn.init.normal_(self.item_id.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The item representation: what the rec loss and the auxiliary losses both train."""
        gate = list(self.gate.parameters()) if self.gate is not None else []
        return [self.item_id.weight, self.content_weight, self.content_bias] + gate

    def to_device(self, device) -> "MultimodalRec":
        self.to(device)
        for name in ("attr_idx", "attr_val", "features", "targets"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self

    def content(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """c_i = W_c f_i + b_c for items `idx` [M] (None: all), [M, D]."""
        if self.attr_idx is not None:
            ai = self.attr_idx if idx is None else self.attr_idx[idx]
            av = self.attr_val if idx is None else self.attr_val[idx]
            c = nn.functional.embedding_bag(ai, self.content_weight, per_sample_weights=av, mode="sum")
        else:
            c = (self.features if idx is None else self.features[idx]) @ self.content_weight
        return c + self.content_bias

    def fuse(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """v for items `idx` [M] (None: all), [M, D]."""
        e = self.item_id.weight if idx is None else self.item_id(idx)
        c = self.content(idx)
        if self.gate is None:
            return e + c
        g = torch.sigmoid(self.gate(torch.cat([e, c], dim=-1)))
        return g * e + (1 - g) * c

    def encode(self, hist: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """hist [B, L, D] item vectors (left-padded), valid [B, L] -> user vectors [B, D]."""
        if self.transformer is None:
            w = valid.to(hist.dtype)[..., None]
            pooled = (hist * w).sum(1) / w.sum(1).clamp(min=1.0)
        else:
            x = hist + self.position.weight[None, -hist.shape[1]:, :]
            pooled = self.transformer(x, src_key_padding_mask=~valid)[:, -1, :]
        return self.user_proj(pooled)

    def probe(self, v: torch.Tensor) -> torch.Tensor:
        """Popularity read-out with reversed gradient on the probe's weights (module docstring)."""
        return v @ _ReverseGrad.apply(self.pop_probe.weight).T + self.pop_probe.bias


def histories(items: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, max_len: int):
    """Items starts..ends-1 of the flat `items`, last `max_len`, left-padded: (idx [B, L], valid [B, L])."""
    pos = ends[:, None] - torch.arange(max_len, 0, -1, device=items.device)[None, :]
    valid = pos >= starts[:, None]
    idx = torch.where(valid, items[pos.clamp(min=0)], torch.zeros_like(pos))
    return idx, valid


class MultimodalRecipe(RankingRecipe):
    def __init__(self, cfg: Config, data: Dataset, device: torch.device):
        super().__init__(cfg, data, device)
        if data.item_features is None:
            raise TunerError(f"{data.name}: model multimodal needs item content features (data.item_attributes)")
        self.model = MultimodalRec(cfg, data.item_features).to_device(device)
        self.optimizer = adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.rec = losses.get_ranking_loss(cfg.loss, "multimodal")
        self.loss_kwargs = self.rec.extra(cfg, data.n_items) if self.rec.extra else {}
        self.sampler = NegativeSampler("uniform", data.train_counts(), device=device)  # negatives and aux items
        self.schedule = schedule(cfg)
        binary = bool(np.isin(data.item_features, (0.0, 1.0)).all())
        self.recon_kind = ("bce" if binary else "mse") if cfg.recon_loss == "auto" else cfg.recon_loss
        self.log_pop = torch.log1p(torch.as_tensor(data.train_counts(), dtype=torch.float32, device=device))
        indptr = np.asarray(data.train_indptr)
        self.items = torch.as_tensor(data.train_items, device=device)
        users = data.train_users()
        pos = np.arange(data.n_train, dtype=np.int64)
        keep = pos > indptr[users]  # a user's first training item has no history to predict from
        self.ex_pos = torch.as_tensor(pos[keep], device=device)
        self.ex_start = torch.as_tensor(indptr[users][keep], device=device)
        self._eval: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- training -------------------------------------------------------------------------------
    def _set_frozen(self, alphas: dict[str, float]) -> None:
        for name, mod in (("recon", self.model.decoder), ("causal", self.model.pop_probe)):
            mod.requires_grad_(alphas[name] > 0)

    def train_epoch(self, epoch: int, gen: torch.Generator) -> dict[str, float]:
        cfg, dev = self.cfg, self.device
        alphas = self.schedule.alphas_at(epoch)
        self._set_frozen(alphas)
        shared = self.model.shared_parameters()
        params = [p for p in self.model.parameters() if p.requires_grad]
        order = torch.randperm(self.ex_pos.shape[0], generator=gen, device=dev)
        sums = {k: torch.zeros((), device=dev) for k in ("train_loss", "loss_rec", *(f"loss_{a}" for a in AUX))}
        grads, steps = {"grad_norm": 0.0, "rec": 0.0, "aux": 0.0, "probes": 0}, 0  # sums over steps (probes: measured)
        for step, start in enumerate(range(0, order.shape[0], cfg.batch_size)):
            rec, v_aux, aux_items = self._rec_loss(order[start : start + cfg.batch_size], gen)
            terms = self._aux_terms(v_aux, aux_items, alphas)
            aux = sum((alphas[a] * terms[a] for a in AUX if alphas[a] > 0), torch.zeros((), device=dev))
            total = rec + aux
            self._backward_step(total, rec, shared, params, grads, epoch, step)
            for k, v in (("train_loss", total), ("loss_rec", rec), *((f"loss_{a}", terms[a]) for a in AUX)):
                sums[k] += v.detach()
            steps += 1
        out = {k: (v / max(steps, 1)).item() for k, v in sums.items()}
        out.update({f"alpha_{a}": alphas[a] for a in AUX})
        out.update(phase=float(self.schedule.phase(epoch)), grad_norm=grads["grad_norm"] / max(steps, 1))
        return out | _ratio_metrics(grads["rec"], grads["aux"], grads["probes"])

    def _rec_loss(self, b: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rec loss of examples b [B], dispatched on the loss's kind; also the aux items [A] and their vectors [A, D].

        Draw order (aux items, then negatives) is the generator's stream: keep it, seeded runs repeat."""
        p = self.ex_pos[b]
        target = self.items[p]  # [B]
        hist, valid = histories(self.items, self.ex_start[b], p, _width(p - self.ex_start[b], self.cfg.max_len))
        extra = self.sampler.sample(b.shape[0], 1, gen)[:, 0]  # [B] uniform items for the auxiliary terms
        aux_items = torch.unique(torch.cat([target, extra]))
        if self.rec.kind == FULL:
            return (*self._full_rec(hist, valid, target, aux_items), aux_items)
        return (*self._sampled_rec(hist, valid, target, aux_items, gen), aux_items)

    def _full_rec(self, hist, valid, target, aux_items) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss over the whole catalogue, aux item vectors): every item vector is computed anyway."""
        model, table = self.model, self.model.fuse()  # table [N, D]
        h = model.encode(table[hist], valid)
        # scores h @ table.T + bias, as factors [h, 1] @ [table, bias].T: blockwise, no [B, N] logits
        rec = self.rec.linear(torch.cat([h, torch.ones_like(h[:, :1])], 1),
                              torch.cat([table, model.item_bias.weight], 1), target)
        return rec, table[aux_items]

    def _sampled_rec(self, hist, valid, target, aux_items, gen) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss on num_negatives sampled items per positive, aux item vectors): one fuse of the distinct items."""
        model, neg = self.model, self.sampler.sample(target.shape[0], self.cfg.num_negatives, gen)  # neg [B, K]
        flat = torch.cat([hist.reshape(-1), target, neg.reshape(-1), aux_items])
        uniq, inv = torch.unique(flat, return_inverse=True)
        vec = model.fuse(uniq)[inv]
        nh, nb, nn_ = hist.numel(), target.shape[0], neg.numel()
        h = model.encode(vec[:nh].view(*hist.shape, -1), valid)
        v_pos, v_neg = vec[nh : nh + nb], vec[nh + nb : nh + nb + nn_].view(*neg.shape, -1)  # [B, D], [B, K, D]
        pos_s = (h * v_pos).sum(-1) + model.item_bias(target).squeeze(-1)  # [B]
        neg_s = (h[:, None, :] * v_neg).sum(-1) + model.item_bias(neg).squeeze(-1)  # [B, K]
        return self.rec.fn(pos_s, neg_s, **self.loss_kwargs), vec[nh + nb + nn_ :]

    def _backward_step(self, total, rec, shared, params, grads: dict, epoch: int, step: int) -> None:
        """optimize() on `total`; its inspect hook adds the gradient norm before clipping (every GRAD_EVERY
        steps also the rec/aux norms on `shared`) to `grads`."""
        probe = step % GRAD_EVERY == 0
        g_rec = torch.autograd.grad(rec, shared, retain_graph=True, allow_unused=True) if probe else None

        def measure():  # .grad: the total's gradients, not yet clipped
            gnorm = _norm([q.grad for q in params])
            self.check_finite(gnorm, epoch, step)
            grads["grad_norm"] += float(gnorm)
            if probe:
                grads["rec"] += float(_norm(g_rec))
                grads["aux"] += float(_norm([None if q.grad is None else q.grad - (g if g is not None else 0)
                                             for q, g in zip(shared, g_rec)]))
                grads["probes"] += 1

        self.optimize(total, epoch, step, measure)

    def _aux_terms(self, v: torch.Tensor, items: torch.Tensor, alphas: dict[str, float]) -> dict[str, torch.Tensor]:
        """Raw values of the three auxiliary terms; a term whose alpha is 0 is computed without grad."""
        model, out = self.model, {}

        def term(name, fn):
            if alphas[name] > 0:
                out[name] = fn()
            else:
                with torch.no_grad():
                    out[name] = fn()

        term("recon", lambda: losses.reconstruction(model.decoder(v), model.targets[items], self.recon_kind))
        term("causal", lambda: losses.squared_correlation(model.probe(v).squeeze(-1), self.log_pop[items]))
        if v.shape[0] >= 2:
            term("diversity", lambda: losses.uniformity(v, self.cfg.uniformity_t))
        else:
            out["diversity"] = torch.zeros((), device=v.device)
        return out

    # -- evaluation ----------------------------------------------------------------------------
    def _split_tensors(self, split: str):
        if split not in self._eval:  # (indptr, items) of the split's sequences, on the device once
            self._eval[split] = tuple(torch.as_tensor(a, device=self.device) for a in self.data.sequences(split))
        return self._eval[split]

    @torch.no_grad()
    def evaluate(self, split: str, ks=(10, 20), batch_users: int = M.EVAL_BATCH_USERS) -> dict[str, float]:
        self._table = self.model.fuse()  # item vectors once per evaluation, not per user block
        try:
            return super().evaluate(split, ks, batch_users)
        finally:
            self._table = None

    @torch.no_grad()
    def score_users(self, split: str, start: int, stop: int) -> torch.Tensor:
        model = self.model
        indptr, items = self._split_tensors(split)
        table = model.fuse() if getattr(self, "_table", None) is None else self._table
        starts, ends = indptr[start:stop], indptr[start + 1 : stop + 1]
        hist, valid = histories(items, starts, ends, _width(ends - starts, self.cfg.max_len))
        h = model.encode(table[hist], valid)
        return h @ table.T + model.item_bias.weight.T

    @torch.no_grad()
    def extra_metrics(self) -> dict[str, float]:
        m = self.model
        if m.gate is None:
            return {}
        g = torch.sigmoid(m.gate(torch.cat([m.item_id.weight, m.content()], dim=-1)))
        return {"gate_mean": float(g.mean())}


def _width(lengths: torch.Tensor, max_len: int) -> int:
    """History columns a block needs: its longest history, at most max_len (at least 1)."""
    return max(1, min(max_len, int(lengths.max()) if lengths.numel() else 1))


def _ratio_metrics(rec: float, aux: float, probes: int) -> dict[str, float]:
    """Epoch means of the measured rec and aux gradient norms and their ratio (NaN when unmeasured)."""
    rec_n, aux_n = rec / max(probes, 1), aux / max(probes, 1)
    return {"rec_grad_norm": rec_n if probes else float("nan"), "aux_grad_norm": aux_n if probes else 0.0,
            "grad_ratio": rec_n / aux_n if probes and aux_n > 0 else float("nan")}


def _norm(grads) -> torch.Tensor:
    """L2 norm of all given gradients together (None: no gradient), 0 for none."""
    gs = [g for g in grads if g is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gs])) if gs else torch.zeros(())
