"""BPR-MF: matrix factorisation with an item bias, trained with any registered loss.

score(u, i) = <p_u, q_i> + b_i. Losses: every trainables.losses.RANKING_LOSSES entry that lists
"bpr_mf", called by its kind. Sampled ones draw `num_negatives` uniform items per positive
(trainables.negatives.NegativeSampler: one vectorised randint on the trial's device; the old name
n_negatives still reads, with a deprecation line); full ones score the whole catalogue, block by
block (the entry's `linear`) so the [B, N] logits never exist.
`weight_decay` is the classic BPR L2 penalty on the embeddings a batch touches.

`optimizer`: "adam" updates both whole tables every step (Adam moves rows with momentum even when
their gradient is zero); "sparse_adam" is lazy Adam (trainables.loop.LazyAdam on sparse embedding
gradients, as TensorFlow's LazyAdam and torch.optim.SparseAdam): only the rows a batch touches, so
a step costs O(batch) instead of O(table). Sampled losses only: "ce" gives every item row a
gradient, so it keeps dense Adam. On the CPU, sparse_adam runs each step as two C calls
(FusedLazyAdam, trainables/kernels.py) around the loss, which stays a registry function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainables.config import bounded, choice
from trainables.data import Dataset
from trainables.errors import TunerError
from trainables.losses import FULL, accepted, get_ranking_loss, loss_doc
from trainables.negatives import NegativeSampler
from trainables import kernels
from trainables.loop import LazyAdam, RankingRecipe, adam
from trainables.train_config import TrainConfig

OPTIMIZERS = {"adam": adam, "sparse_adam": LazyAdam}  # name -> (params, lr=) -> optimizer


@dataclass(frozen=True)
class Config(TrainConfig):
    loss: str = choice("bpr", lambda: accepted("bpr_mf"), loss_doc("bpr_mf"))
    dim: int = bounded(64, low=1)
    # embedding tables only, no deep layers: a larger step and batch than the base (the defaults
    # bpr_mf has always had; search_spaces/bpr.yaml and the README's BPR results assume them)
    lr: float = bounded(5.0e-3, low=0.0)
    batch_size: int = bounded(1024, low=1)
    # weight_decay here is the classic BPR L2 penalty on the rows a batch touches, added to the
    # loss (see the module doc), not Adam's: the base field, read by train_epoch
    num_negatives: int = bounded(1, low=1, doc="negatives per positive (sampled losses only)", aliases=("n_negatives",))
    optimizer: str = choice("adam", OPTIMIZERS, "adam (whole tables per step) | sparse_adam (lazy: touched rows only)")


def validate(cfg: Config) -> None:
    if cfg.optimizer == "sparse_adam" and get_ranking_loss(cfg.loss, "bpr_mf").kind == FULL:
        raise TunerError(f"optimizer: sparse_adam needs a sampled loss; loss {cfg.loss} gives every item row a gradient")
    if cfg.optimizer == "sparse_adam" and cfg.grad_clip > 0:
        # lazy Adam updates row by row from sparse gradients (on the CPU inside one C call): no total norm to clip
        raise TunerError("grad_clip: needs optimizer adam; sparse_adam does not clip")


class MF(nn.Module):
    """score(u, i) = <p_u, q_i> + b_i; the bias is the last column of the item table, so a step
    looks each table up once (every lookup's backward writes a dense gradient of the whole table)."""

    def __init__(self, n_users: int, n_items: int, dim: int, sparse: bool = False):
        super().__init__()
        self.dim = dim
        self.user = nn.Embedding(n_users, dim, sparse=sparse)
        self.item = nn.Embedding(n_items, dim + 1, sparse=sparse)  # [N, D + 1]: factors, then the bias
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        with torch.no_grad():
            self.item.weight[:, dim].zero_()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """users [B], items [B, K] -> scores [B, K], and the factors used: p [B, D], q [B, K, D]."""
        p, e = self.user(users), self.item(items)  # [B, D], [B, K, D + 1]
        q = e[..., : self.dim]
        return (p[:, None, :] * q).sum(-1) + e[..., self.dim], p, q

    def factors(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a [B, D + 1], b [N, D + 1]) with a @ b.T = scores of users [B] over the whole catalogue."""
        p = self.user(users)
        return torch.cat([p, torch.ones_like(p[:, :1])], 1), self.item.weight

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """users [B] -> scores [B, N] over the whole catalogue."""
        a, b = self.factors(users)
        return a @ b.T


class FusedLazyAdam:
    """MF's lazy-Adam step in two C calls (trainables/csrc/mf_lazy_adam.c): scores of a batch's
    lookups, then every lookup's gradient summed per distinct row and one Adam update per row.

    Between them autograd differentiates the registry loss on the [B, 1+K] scores alone, so any
    sampled loss works. Same arithmetic and optimizer state as LazyAdam.step on the sparse
    gradients (tests/trainables_tests/test_bpr_mf.py), so checkpoints move between the two paths. At batch 1024 a
    step is ~15 torch ops instead of ~60 (their dispatch cost, not arithmetic, bounded the speed).
    """

    def __init__(self, lib, model: MF, optimizer: LazyAdam):
        self.lib, self.model, self.opt = lib, model, optimizer
        self.slots = [torch.full((t.weight.shape[0],), -1, dtype=torch.int32) for t in (model.user, model.item)]
        self.work: dict[tuple[int, int], list[torch.Tensor]] = {}  # (B, K) -> gradient rows + row ids

    def scores(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """users [B], items [B, K] -> scores of column 0 [B] and of the rest [B, K - 1], both leaves
        for autograd (no slicing nodes to differentiate), and the sum of squared factors looked up."""
        b, k = items.shape
        s = torch.empty(b, k)
        sq = self.lib.mf_scores(self.model.user.weight.data_ptr(), self.model.item.weight.data_ptr(),
                                users.data_ptr(), items.data_ptr(), b, k, self.model.dim, s.data_ptr())
        return s[:, 0].requires_grad_(), s[:, 1:].requires_grad_(), sq

    @torch.no_grad()
    def step(self, users: torch.Tensor, items: torch.Tensor, dpos: torch.Tensor, dneg: torch.Tensor,
             l2: float) -> None:
        """Adam on the rows users [B] and items [B, K] looked up, given dLoss/dscores of column 0
        (dpos [B]) and of the rest (dneg [B, K - 1]); the loss held l2 * the squared-factor sum."""
        b, k = items.shape
        d, w = self.model.dim, self.model.dim + 1
        if (b, k) not in self.work:  # the last batch of an epoch is smaller: one workspace per shape
            self.work[(b, k)] = [torch.empty(b, d), torch.empty(b, dtype=torch.int64),
                                 torch.empty(b * k, w), torch.empty(b * k, dtype=torch.int64)]
        group = self.opt.param_groups[0]
        lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
        tables = []
        for emb in (self.model.user, self.model.item):
            st, t = self.opt.advance(emb.weight)
            tables += [emb.weight, st["exp_avg"], st["exp_avg_sq"]]
        dpos, dneg = dpos.contiguous(), dneg.contiguous()  # named: the C call reads them (a temporary would be freed)
        ptr = [x.data_ptr() for x in (*tables, users, items, dpos, dneg)]
        self.lib.mf_lazy_adam(*ptr, b, k, d, 2 * l2, lr / (1 - b1**t), b1, b2, 1 - b2**t, eps,
                              *[x.data_ptr() for x in (self.slots[0], self.slots[1], *self.work[(b, k)])])


class BPRMFRecipe(RankingRecipe):
    def __init__(self, cfg: Config, data: Dataset, device: torch.device):
        super().__init__(cfg, data, device)
        self.loss = get_ranking_loss(cfg.loss, "bpr_mf")
        self.loss_kwargs = self.loss.extra(cfg, data.n_items) if self.loss.extra else {}
        self.sampler = NegativeSampler("uniform", data.train_counts(), device=device)  # seen items may be drawn (classic BPR)
        sparse = OPTIMIZERS[cfg.optimizer] is LazyAdam  # lazy Adam reads sparse embedding gradients
        self.model = MF(data.n_users, data.n_items, cfg.dim, sparse=sparse).to(device)
        self.optimizer = OPTIMIZERS[cfg.optimizer](self.model.parameters(), lr=cfg.lr)
        self.users = torch.tensor(data.train_users(), device=device)  # [nnz]
        self.items = torch.tensor(data.train_items, device=device)  # [nnz] (a copy: Ray hands read-only arrays)
        lib = kernels.load() if sparse and device.type == "cpu" else None
        self.fused = FusedLazyAdam(lib, self.model, self.optimizer) if lib is not None else None
        self.pending = None  # fused path: the batch whose score gradients update() applies
        if self.fused is not None and len(self.users) and (self.users.max() >= data.n_users or self.items.max() >= data.n_items):
            raise ValueError("bpr_mf: interaction ids outside the tables (the C kernel does not check bounds)")

    def train_epoch(self, epoch: int, gen: torch.Generator) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        order = torch.randperm(self.users.shape[0], generator=gen, device=self.device)
        users, items = self.users[order], self.items[order]  # one gather per epoch, then contiguous slices
        total = torch.zeros((), device=self.device)
        steps = 0
        for step, start in enumerate(range(0, order.shape[0], cfg.batch_size)):
            u, i = users[start : start + cfg.batch_size], items[start : start + cfg.batch_size]  # [B], [B]
            if self.loss.kind == FULL:
                a, b = model.factors(u)
                loss = self.loss.linear(a, b, i)
                touched = [a[:, : cfg.dim], model.item(i)[:, : cfg.dim]]
            else:
                neg = self.sampler.sample(u.shape[0], cfg.num_negatives, gen)  # [B, K]
                ids = torch.cat([i[:, None], neg], dim=1)  # [B, 1+K]: the positive, then the negatives
                if self.fused is not None:
                    total += self.fused_step(u, ids, epoch, step)
                    steps += 1
                    continue
                scores, p, q = model(u, ids)  # [B, 1+K], [B, D], [B, 1+K, D]
                loss = self.loss.fn(scores[:, 0], scores[:, 1:], **self.loss_kwargs)
                touched = [p, q]
            if cfg.weight_decay > 0:
                loss = loss + cfg.weight_decay * sum(t.pow(2).sum() for t in touched) / u.shape[0]
            total += self.optimize(loss, epoch, step)
            steps += 1
        return {"train_loss": (total / max(steps, 1)).item()}

    def fused_step(self, users: torch.Tensor, items: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """optimize() for sparse_adam on the CPU: users [B], items [B, 1+K] (positive first).

        The scores are autograd leaves, so optimize's backward leaves dLoss/dscores in their .grad
        (the tables get none); `update` hands them to the C kernel instead of LazyAdam.step."""
        pos, neg, sq = self.fused.scores(users, items)  # [B], [B, K]
        l2 = self.cfg.weight_decay / users.shape[0]
        loss = self.loss.fn(pos, neg, **self.loss_kwargs) + l2 * sq
        self.pending = (users, items, pos, neg, l2)
        return self.optimize(loss, epoch, step)

    def update(self) -> None:
        if self.pending is None:
            return super().update()
        users, items, pos, neg, l2 = self.pending
        self.pending = None
        self.fused.step(users, items, pos.grad, neg.grad, l2)

    @torch.no_grad()
    def score_users(self, split: str, start: int, stop: int) -> torch.Tensor:
        return self.model.score_all(torch.arange(start, stop, device=self.device))
