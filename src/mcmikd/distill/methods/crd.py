"""Tian et al., "Contrastive Representation Distillation" (ICLR 2020), as RepDistiller runs it.

Both pooled embeddings are projected by a linear layer to `feat_dim` (128) and L2-normalised. Two memory
banks of size num_train × feat_dim (registered buffers, so they are checkpointed and resumed) hold a
momentum average (`nce_momentum` 0.5) of each training image's student and teacher embedding. Each anchor is
scored against its own slot (the positive, RepDistiller's 'exact' mode) and `nce_k` negatives drawn uniformly
without replacement from images of *other* classes: exp(⟨v, m⟩ / τ) / Z, with the constants Z fixed from the
first batch. The NCE loss (CRD's Eq. 18, noise distribution 1/N) is applied symmetrically (teacher anchors
against the student bank and vice versa).

`nce_k` is capped to what the data allow: at most N − (largest class count) images are of another class
than any anchor (N − 1 when the labels cannot be read, e.g. on the meta device).

`bank` says which images N counts. `visible` (default): the images the student sees (its few-shot subset, without
omitted classes), RepDistiller's setting when the student sees the whole training set. `full`: every training image
of a class the student may see (`DistillContext.full_train_labels`; the whole training set without omitted
classes), the memory bank's slots and the negatives indexed into it — as the official MCMI few-shot code did
(its CRD dataset sampled negatives over the full CIFAR-100 training set while the student trained on a subset).
Slots of images the student never sees keep their random initialisation, so with `full` most negatives of a
small subset are random unit-scale vectors. Images of omitted (zero-shot) classes are never in the bank.
`visible` draws exactly the random numbers it drew before the option existed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mcmikd.distill.base import Distiller
from mcmikd.distill.methods._common import full_precision
from mcmikd.errors import ConfigError
from mcmikd.syncguard import order_independent

EPS = 1e-7


def nce_loss(scores: torch.Tensor, n_data: int) -> torch.Tensor:
    """CRD's Eq. 18: −[Σ_b log h(pos) + Σ_b Σ_k log(1 − h(neg))] / b with h(x) = x / (x + K/N).

    `scores` is (b, K+1): column 0 the positive, the rest the K negatives (already divided by Z).
    """
    b, k = scores.shape[0], scores.shape[1] - 1
    noise = k / float(n_data)
    log_d1 = torch.log(scores[:, 0] / (scores[:, 0] + noise + EPS))
    log_d0 = torch.log(noise / (scores[:, 1:] + noise + EPS))
    return -(log_d1.sum() + log_d0.sum()) / b


def contrast_scores(anchor: torch.Tensor, memory: torch.Tensor, contrast_idx: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """exp(⟨memory[idx], anchor⟩ / τ) for each anchor's K+1 contrast indices (unnormalised), (b, K+1)."""
    bank = memory.index_select(0, contrast_idx.flatten()).view(*contrast_idx.shape, -1).detach()
    return torch.exp(torch.bmm(bank, anchor.unsqueeze(2)).squeeze(2) / temperature)


def crd_loss(student_emb, teacher_emb, memory_s, memory_t, contrast_idx, temperature, n_data, z_s, z_t):
    """Symmetric CRD loss of normalised embeddings against the two memory banks, Z constants given."""
    out_t = contrast_scores(teacher_emb, memory_s, contrast_idx, temperature) / z_t  # teacher anchors
    out_s = contrast_scores(student_emb, memory_t, contrast_idx, temperature) / z_s  # student anchors
    return nce_loss(out_s, n_data) + nce_loss(out_t, n_data)


def sample_other_class(labels: torch.Tensor, anchor_labels: torch.Tensor, k: int,
                       generator: torch.Generator | None) -> torch.Tensor:
    """For each anchor, k distinct positions of `labels` whose class differs from the anchor's, uniformly."""
    keys = torch.rand(len(anchor_labels), len(labels), generator=generator, device=labels.device)
    keys = keys.masked_fill(labels.unsqueeze(0) == anchor_labels.unsqueeze(1), 2.0)  # never among the k smallest
    return torch.argsort(keys, dim=1, stable=True)[:, :k]


class Embed(nn.Module):
    """Linear projection followed by L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x.flatten(1))
        return x / x.pow(2).sum(1, keepdim=True).sqrt()


class CRD(Distiller):
    name = "crd"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 0.8, "temperature": 4.0, "feat_dim": 128, "nce_k": 16384,
                "nce_t": 0.07, "nce_momentum": 0.5, "bank": "visible"}

    def __init__(self, student, teacher, hp, ctx):
        super().__init__(student, teacher, hp, ctx)
        dim = int(self.hp["feat_dim"])
        n = int(ctx.num_train)
        if ctx.train_labels is None or len(ctx.train_labels) != n:
            raise ConfigError(f"crd needs the labels of all {n} training images (DistillContext.train_labels)")
        labels = ctx.train_labels
        if self.hp["bank"] not in ("visible", "full"):
            raise ConfigError(f"methods.crd.bank: {self.hp['bank']!r} is not one of visible, full")
        self.full_bank = self.hp["bank"] == "full"
        if self.full_bank:
            if ctx.full_train_labels is None or ctx.full_train_slots is None or len(ctx.full_train_slots) != n:
                raise ConfigError("crd with bank: full needs the labels of the whole training set and the slot of "
                                  "each visible image (DistillContext.full_train_labels, full_train_slots)")
            labels = ctx.full_train_labels
            n = len(labels)
            self.register_buffer("slots", ctx.full_train_slots.detach().clone().long(), persistent=False)
        self.n_data = n
        self.nce_k = self.negatives_allowed(int(self.hp["nce_k"]), labels)
        self.heads["embed_s"] = Embed(ctx.student_shapes["pooled"], dim)
        self.heads["embed_t"] = Embed(ctx.teacher_shapes["pooled"], dim)
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory_s", torch.rand(n, dim) * (2 * stdv) - stdv)
        self.register_buffer("memory_t", torch.rand(n, dim) * (2 * stdv) - stdv)
        self.register_buffer("z", torch.full((2,), -1.0))  # Z_s, Z_t; set from the first batch
        self.register_buffer("labels", labels.detach().clone().long(), persistent=False)

    @staticmethod
    def negatives_allowed(nce_k: int, labels: torch.Tensor) -> int:
        n = len(labels)
        if labels.is_meta:
            largest = 1
        else:
            largest = int(torch.bincount(labels.long().cpu()).max()) if n else 0
        k = min(int(nce_k), n - largest)
        if k < 1:
            raise ConfigError("crd needs training images of at least two classes to draw negatives from")
        return k

    def _update_memory(self, memory: torch.Tensor, idx: torch.Tensor, v: torch.Tensor) -> None:
        momentum = self.hp["nce_momentum"]
        new = memory.index_select(0, idx) * momentum + v * (1 - momentum)
        new = new / new.pow(2).sum(1, keepdim=True).sqrt()
        # a batch may repeat an image (a cycled few-shot subset): keep its last occurrence, deterministically —
        # every occurrence writes the row of the last one (scatter_reduce amax: no host sync, deterministic), so
        # duplicate writes agree and the write may run without the deterministic index_put_ path, which syncs with
        # the host on CUDA (mcmikd.syncguard.order_independent); the bits are the same either way
        last = torch.full((memory.shape[0],), -1, dtype=torch.long, device=idx.device).scatter_reduce_(
            0, idx, torch.arange(len(idx), device=idx.device), reduce="amax")
        with order_independent():
            memory.index_copy_(0, idx, new.index_select(0, last.index_select(0, idx)).to(memory.dtype))

    def step_inputs(self, targets, indices, generator) -> dict[str, torch.Tensor]:
        """The step's random draw, made before the step (outside a captured CUDA graph; `mcmikd.step`): the
        `nce_k` negatives (b, nce_k) of each anchor, positions (bank slots) of images of other classes."""
        indices = indices.to(self.labels.device)
        if self.full_bank:  # visible positions -> slots of the full-set bank
            indices = self.slots[indices]
        return {"negatives": sample_other_class(self.labels, self.labels[indices], self.nce_k, generator)}

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None, negatives=None):
        """`negatives` (b, nce_k) as `step_inputs` draws them; None: drawn here from `generator`."""
        if indices is None:
            raise ValueError("crd needs the dataset positions of the batch (indices)")
        out = self.student.forward_features(images)
        t = self.teacher_features(images)
        terms = self.base_terms(out.logits, t.logits, targets)
        v_s = self.heads["embed_s"](out.pooled)
        v_t = self.heads["embed_t"](t.pooled)
        indices = indices.to(self.labels.device)
        if negatives is None:
            negatives = self.step_inputs(targets, indices, generator)["negatives"]
        if self.full_bank:  # visible positions -> slots of the full-set bank
            indices = self.slots[indices]
        contrast_idx = torch.cat([indices.unsqueeze(1), negatives], dim=1)
        with full_precision(images):
            v_s, v_t = v_s.float(), v_t.float()
            tau = self.hp["nce_t"]
            raw_s = contrast_scores(v_s, self.memory_t, contrast_idx, tau)
            raw_t = contrast_scores(v_t, self.memory_s, contrast_idx, tau)
            with torch.no_grad():  # Z = mean score × N from the first batch (no host sync)
                first = torch.stack([raw_s.mean(), raw_t.mean()]) * self.n_data
                self.z.copy_(torch.where(self.z < 0, first, self.z))
            loss = nce_loss(raw_s / self.z[0], self.n_data) + nce_loss(raw_t / self.z[1], self.n_data)
            with torch.no_grad():
                self._update_memory(self.memory_s, indices, v_s.detach())
                self._update_memory(self.memory_t, indices, v_t.detach())
        terms["crd"] = self.hp["beta"] * loss
        return out.logits, terms
