import math

import pytest
import torch

from mcmikd.cmi import class_centroids, conditional_mutual_information
from mcmikd.teachers.mcmi import mcmi_loss as mcmi_terms

# training numbers: run again under another CPU kernel set by `make test-kernels`
pytestmark = pytest.mark.numeric


def mcmi_loss(*args):
    """The MCMI loss as training sums it: the named terms of `mcmikd.teachers.mcmi.mcmi_loss`."""
    return sum(mcmi_terms(*args).values())


def test_identical_outputs_within_each_class_give_zero_cmi():
    probs = torch.tensor([[0.7, 0.2, 0.1]] * 3 + [[0.1, 0.1, 0.8]] * 2)
    labels = torch.tensor([0, 0, 0, 2, 2])
    assert conditional_mutual_information(probs, labels, 3).item() == 0.0


def test_cmi_by_hand():
    # class 0 has two samples [1, 0] and [0.5, 0.5]: centroid [0.75, 0.25]
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    labels = torch.tensor([0, 0])
    q = class_centroids(probs, labels, 2)
    assert torch.allclose(q[0], torch.tensor([0.75, 0.25]))
    kl1 = math.log(1 / 0.75)
    kl2 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    expected = (kl1 + kl2) / 2
    assert abs(conditional_mutual_information(probs, labels, 2).item() - expected) < 1e-6


def test_cmi_equals_entropy_difference():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(40, 5), dim=1)
    labels = torch.randint(0, 5, (40,))
    q = class_centroids(probs, labels, 5)
    h = lambda p: -(p * p.log()).sum(dim=1)  # noqa: E731
    expected = (h(q[labels]) - h(probs)).mean()  # H(Ŷ|Y) − H(Ŷ|X)
    assert torch.allclose(conditional_mutual_information(probs, labels, 5), expected, atol=1e-5)


def test_centroids_are_class_means_and_absent_class_is_nan():
    probs = torch.tensor([[0.2, 0.8, 0.0], [0.4, 0.6, 0.0], [0.0, 0.0, 1.0]])
    q = class_centroids(probs, torch.tensor([1, 1, 0]), 3)
    assert torch.allclose(q[1], torch.tensor([0.3, 0.7, 0.0]))
    assert torch.allclose(q[0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.isnan(q[2]).all()


def test_mcmi_loss_subtracts_the_cmi_term():
    torch.manual_seed(1)
    logits = torch.randn(8, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    q = class_centroids(torch.softmax(logits, 1), labels, 4)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    kl = conditional_mutual_information(torch.softmax(logits, 1), labels, 4)
    assert torch.allclose(mcmi_loss(logits, labels, q, 0.0), ce)
    assert torch.allclose(mcmi_loss(logits, labels, q, 0.3), ce - 0.3 * kl, atol=1e-6)
    assert mcmi_loss(logits, labels, q, 0.3) < ce  # the KL term is positive, so it lowers the loss


def test_mcmi_gradient_step_raises_cmi_against_frozen_centroids():
    torch.manual_seed(2)
    logits = torch.randn(16, 5, requires_grad=True)
    labels = torch.arange(16) % 5
    q = class_centroids(torch.softmax(logits.detach(), 1), labels, 5)

    def kl_term(z):
        from mcmikd.cmi import kl_to_centroids

        return kl_to_centroids(torch.softmax(z, 1), labels, q).mean()

    # with only the CMI term (huge λ relative to CE), a gradient step must increase KL(P_x ‖ Q_y)
    loss = mcmi_loss(logits, labels, q, 100.0)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    before = kl_term(logits.detach())
    after = kl_term(logits.detach() - 0.01 * logits.grad)
    assert after > before
    # the centroids are frozen: no gradient flows into them
    q_param = q.clone().requires_grad_(True)
    mcmi_loss(logits.detach().requires_grad_(True), labels, q_param, 0.5).backward()
    assert q_param.grad is None


def test_mcmi_loss_rejects_negative_lambda():
    import pytest

    with pytest.raises(ValueError, match="lam must be >= 0"):
        mcmi_loss(torch.zeros(2, 2), torch.tensor([0, 1]), torch.full((2, 2), 0.5), -0.1)


def test_the_frozen_centroid_kl_is_the_cmi_plus_the_drift():
    """mean KL(P_x ‖ Q⁰_y) = CMI + Σ_y p(y)·KL(Q_y ‖ Q⁰_y) (docs/paper.md, "What fine-tuning with frozen centroids
    does"), by hand on two classes."""
    import pytest

    from mcmikd.cmi import cmi_decomposition

    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 0, 1])
    frozen = torch.tensor([[0.5, 0.5], [0.3, 0.7]])
    d = cmi_decomposition(probs, labels, frozen)
    kl = lambda p, q: sum(a * math.log(a / b) for a, b in zip(p, q))  # noqa: E731
    cmi = (kl([0.8, 0.2], [0.7, 0.3]) + kl([0.6, 0.4], [0.7, 0.3])) / 3  # class 1's one sample is its centroid
    drift = 2 / 3 * kl([0.7, 0.3], [0.5, 0.5])  # class 1's mean equals its frozen centroid
    assert d["cmi"] == pytest.approx(cmi, rel=1e-5) and d["drift"] == pytest.approx(drift, rel=1e-5)
    assert d["frozen_kl"] == pytest.approx(cmi + drift, rel=1e-5)
