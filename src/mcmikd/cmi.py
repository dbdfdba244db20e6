"""Conditional mutual information of a classifier and the MCMI training objective (Ye et al., ICLR 2024).

For a teacher with output distribution P_x = softmax(z(x)) and class centroids Q_y = E[P_X | Y = y],
    CMI = I(X; Ŷ | Y) ≈ (1/N) Σ_i KL(P_{x_i} ‖ Q_{y_i}).
It is 0 when every image of a class gets the same output distribution. The MCMI teacher minimises
    CE − λ · mean_i KL(P_{x_i} ‖ Q_{y_i}),   λ > 0,
i.e. it maximises log-likelihood and CMI together (adding +λ·KL would minimise CMI instead).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-12


def class_centroids(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Q[y] = mean of the rows of `probs` (N, C) whose label is y; a class without samples gets NaN rows."""
    probs = probs.float()
    sums = torch.zeros(num_classes, probs.shape[1], dtype=probs.dtype, device=probs.device)
    sums.index_add_(0, labels, probs)
    counts = torch.bincount(labels, minlength=num_classes).to(probs.dtype).unsqueeze(1)
    return sums / counts


def kl_to_centroids(probs: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(P_x ‖ Q_y) for rows of `probs` (N, C) against `centroids[labels]`."""
    q = centroids[labels]
    return (probs * (torch.log(probs.clamp_min(_EPS)) - torch.log(q.clamp_min(_EPS)))).sum(dim=1)


def conditional_mutual_information(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Empirical CMI: mean over samples of KL(P_x ‖ Q_y) with Q computed from the same samples."""
    probs = probs.float()
    centroids = class_centroids(probs, labels, num_classes)
    return kl_to_centroids(probs, labels, centroids).mean()


def mcmi_loss(logits: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, lam: float) -> torch.Tensor:
    """CE − λ · mean KL(P_x ‖ Q_y) with frozen `centroids` (C, C); differentiable in `logits`."""
    if lam < 0:
        raise ValueError(f"lam must be >= 0 (got {lam}); MCMI maximises CMI, so the KL term is subtracted")
    ce = F.cross_entropy(logits, labels)
    probs = F.softmax(logits.float(), dim=1)
    return ce - lam * kl_to_centroids(probs, labels, centroids.detach()).mean()
