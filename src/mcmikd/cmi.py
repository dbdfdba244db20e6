"""Conditional mutual information of a classifier and the MCMI training objective (Ye et al., ICLR 2024).

For a teacher with output distribution P_x = softmax(z(x)) and class centroids Q_y = E[P_X | Y = y],
    CMI = I(X; Ŷ | Y) ≈ (1/N) Σ_i KL(P_{x_i} ‖ Q_{y_i}).
It is 0 when every image of a class gets the same output distribution. Units: nats. The MCMI teacher's
training loss, which maximises it, is `mcmikd.teachers.mcmi.mcmi_loss`.
"""

from __future__ import annotations

import torch

_EPS = 1e-12


def class_centroids(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Q[y] = mean of the rows of `probs` (N, C) whose label is y; a class without samples gets NaN rows."""
    probs = probs.float()
    sums = torch.zeros(num_classes, probs.shape[1], dtype=probs.dtype, device=probs.device)
    sums.index_add_(0, labels, probs)
    counts = torch.bincount(labels, minlength=num_classes).to(probs.dtype).unsqueeze(1)
    return sums / counts


def batch_class_means(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """`class_centroids` of one batch without a host sync (it runs inside the captured training step, e.g. MCMI's
    EMA centroids): the same bits as `class_centroids` on CPU (the class sums add the rows in batch order, as CPU
    `index_add_` does; the counts are integer sums of a one-hot mask), with no `bincount` and no deterministic
    `index_add_`, which both read values on the host on CUDA. `probs` (b, C'), `labels` (b,) int64; (C, C') out,
    NaN rows for classes not in the batch. Cost: b small additions (for a batch, not a dataset)."""
    probs = probs.float()
    hot = labels.unsqueeze(1) == torch.arange(num_classes, device=labels.device)  # (b, C)
    masked = hot.to(probs.dtype).unsqueeze(2) * probs.unsqueeze(1)  # (b, C, C'): row i in its class's slot
    sums = torch.zeros(num_classes, probs.shape[1], dtype=probs.dtype, device=probs.device)
    for row in masked:  # in order: x + 0 = x, so each class's sum is its rows' sum in batch order
        sums = sums + row
    return sums / hot.sum(0).to(probs.dtype).unsqueeze(1)


def kl_to_centroids(probs: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(P_x ‖ Q_y) for rows of `probs` (N, C) against `centroids[labels]`."""
    q = centroids[labels]
    return (probs * (torch.log(probs.clamp_min(_EPS)) - torch.log(q.clamp_min(_EPS)))).sum(dim=1)


def conditional_mutual_information(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Empirical CMI: mean over samples of KL(P_x ‖ Q_y) with Q computed from the same samples."""
    probs = probs.float()
    centroids = class_centroids(probs, labels, num_classes)
    return kl_to_centroids(probs, labels, centroids).mean()


def cmi_decomposition(probs: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> dict[str, float]:
    """The MCMI loss term split into the CMI and the centroid drift (docs/paper.md, "What fine-tuning with frozen
    centroids does"), all in nats:

        frozen_kl = mean_i KL(P_{x_i} ‖ Q⁰_{y_i}) = cmi + drift,
        cmi = mean_i KL(P_{x_i} ‖ Q_{y_i}) with Q the class means of these `probs` (the true empirical CMI),
        drift = Σ_y p(y) · KL(Q_y ‖ Q⁰_y), p(y) the label frequencies,

    for `probs` (N, C) on the simplex, int64 `labels` (N,) and reference centroids Q⁰ `centroids` (C, C) (e.g. the
    frozen ones the MCMI loss uses). The identity is exact up to the 1e-12 clamp of the logarithms. Classes without
    samples add nothing.
    """
    probs = probs.float()
    num_classes = centroids.shape[0]
    now = class_centroids(probs, labels, num_classes)
    cmi = kl_to_centroids(probs, labels, now).mean()
    frozen_kl = kl_to_centroids(probs, labels, centroids.float()).mean()
    present = torch.bincount(labels, minlength=num_classes) > 0
    weights = torch.bincount(labels, minlength=num_classes).to(probs.dtype) / len(labels)
    classes = torch.arange(num_classes, device=probs.device)[present]
    drift = (weights[present] * kl_to_centroids(now[present], classes, centroids.float())).sum()
    return {"cmi": float(cmi), "frozen_kl": float(frozen_kl), "drift": float(drift)}
