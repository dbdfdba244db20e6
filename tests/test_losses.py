"""Each pure distillation loss against the paper's / RepDistiller's formula written out in plain numpy."""

import math

import numpy as np
import pytest
import torch

from mcmikd.distill import losses as L

# training numbers: run again under another CPU kernel set by `make test-kernels`
pytestmark = pytest.mark.numeric

RNG = np.random.default_rng(0)


def _t(a):
    return torch.tensor(a, dtype=torch.float64)


def _close(torch_value, numpy_value, tol=1e-9):
    assert float(torch_value) == pytest.approx(float(numpy_value), rel=tol, abs=tol)


def _pool(x, size):
    """Average-pool (b, c, h, w) to (b, c, size, size) for h divisible by size."""
    b, c, h, w = x.shape
    return x.reshape(b, c, size, h // size, size, w // size).mean(axis=(3, 5))


def _match(s, t):
    if s.shape[2] > t.shape[2]:
        s = _pool(s, t.shape[2])
    elif s.shape[2] < t.shape[2]:
        t = _pool(t, s.shape[2])
    return s, t


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _huber(x, y):
    d = np.abs(x - y)
    return np.where(d < 1, 0.5 * d**2, d - 0.5).mean()


# ----------------------------------------------------------------------------------------------- logits
def test_kd_loss_matches_hinton():
    s, t = RNG.normal(size=(4, 5)), RNG.normal(size=(4, 5))
    p_s, p_t = _softmax(s / 4), _softmax(t / 4)
    expected = (p_t * np.log(p_t / p_s)).sum(1).mean() * 16
    _close(L.kd_loss(_t(s), _t(t), 4.0), expected)


def test_dkd_loss_is_tckd_plus_nckd():
    s, t = RNG.normal(size=(5, 6)) * 3, RNG.normal(size=(5, 6)) * 3
    y = np.array([0, 3, 5, 2, 2])
    T, alpha, beta = 4.0, 1.0, 8.0
    p_s, p_t = _softmax(s / T), _softmax(t / T)
    tckd = nckd = 0.0
    for i, c in enumerate(y):
        bs = np.array([p_s[i, c], 1 - p_s[i, c]])
        bt = np.array([p_t[i, c], 1 - p_t[i, c]])
        tckd += (bt * np.log(bt / bs)).sum()
        other = [k for k in range(6) if k != c]
        qs, qt = p_s[i, other] / p_s[i, other].sum(), p_t[i, other] / p_t[i, other].sum()
        nckd += (qt * np.log(qt / qs)).sum()
    expected = (alpha * tckd + beta * nckd) * T**2 / len(y)
    _close(L.dkd_loss(_t(s), _t(t), torch.tensor(y), alpha, beta, T), expected, 1e-7)
    # identical logits: nothing to distil
    assert float(L.dkd_loss(_t(s), _t(s), torch.tensor(y))) == pytest.approx(0.0, abs=1e-9)


def test_hsakd_rotations_joint_labels_and_loss_terms_by_hand():
    from mcmikd.distill.methods.hsakd import aux_ce_loss, rotate_batch

    rng = np.random.default_rng(7)  # its own generator: the draws of the other tests stay as they were
    x = np.arange(2 * 1 * 3 * 3, dtype=np.float64).reshape(2, 1, 3, 3)
    y = np.array([2, 0])
    x4, joint = rotate_batch(_t(x), torch.tensor(y))
    expected = np.concatenate([np.rot90(x, k, axes=(2, 3)) for k in range(4)])  # rotation-major, 90° steps
    assert np.array_equal(x4.numpy(), expected)
    assert joint.tolist() == [8, 0, 9, 1, 10, 2, 11, 3]  # y·4 + k
    b, k_cls, T, gamma, alpha, beta = 2, 3, 3.0, 1.0, 0.7, 2.0
    s, t = rng.normal(size=(4 * b, k_cls)) * 2, rng.normal(size=(4 * b, k_cls)) * 2
    s_aux = [rng.normal(size=(4 * b, 4 * k_cls)) for _ in range(2)]
    t_aux = [rng.normal(size=(4 * b, 4 * k_cls)) for _ in range(2)]

    def kl(zs, zt):  # KL(p_t ‖ p_s) at T, × T², mean over the rows
        p_s, p_t = _softmax(zs / T), _softmax(zt / T)
        return (p_t * np.log(p_t / p_s)).sum(1).mean() * T**2

    ce = -np.log(_softmax(s[:b])[np.arange(b), y]).mean()  # the unrotated rows only
    terms = L.hsakd_loss(_t(s), _t(t), [_t(a) for a in s_aux], [_t(a) for a in t_aux], torch.tensor(y),
                         gamma=gamma, alpha=alpha, beta=beta, temperature=T)
    assert set(terms) == {"ce", "kd", "kd_aux"}
    _close(terms["ce"], gamma * ce)
    _close(terms["kd"], alpha * kl(s, t))  # all 4·b rotated rows
    _close(terms["kd_aux"], beta * (kl(s_aux[0], t_aux[0]) + kl(s_aux[1], t_aux[1])))
    aux_ce = sum(-np.log(_softmax(a)[np.arange(4 * b), joint.numpy()]).mean() for a in t_aux)
    _close(aux_ce_loss([_t(a) for a in t_aux], joint), aux_ce)


def test_dist_loss_is_one_minus_pearson_both_ways():
    s, t = RNG.normal(size=(4, 7)), RNG.normal(size=(4, 7))
    T, beta, gamma = 4.0, 1.0, 2.0
    y_s, y_t = _softmax(s / T), _softmax(t / T)
    inter = 1 - np.mean([np.corrcoef(y_s[i], y_t[i])[0, 1] for i in range(4)])
    intra = 1 - np.mean([np.corrcoef(y_s[:, c], y_t[:, c])[0, 1] for c in range(7)])
    _close(L.dist_loss(_t(s), _t(t), beta, gamma, T), T**2 * (beta * inter + gamma * intra), 1e-6)


# ----------------------------------------------------------------------------------------------- feature maps
def test_fitnet_loss_is_mse():
    a, b = RNG.normal(size=(2, 3, 4, 4)), RNG.normal(size=(2, 3, 4, 4))
    _close(L.fitnet_loss(_t(a), _t(b)), ((a - b) ** 2).mean())


def test_at_loss_sums_normalised_attention_differences_and_pools_the_larger_map():
    pairs = [(RNG.normal(size=(2, 3, 4, 4)), RNG.normal(size=(2, 5, 4, 4))),
             (RNG.normal(size=(2, 3, 8, 8)), RNG.normal(size=(2, 6, 4, 4)))]
    expected = 0.0
    for s, t in pairs:
        s, t = _match(s, t)
        a_s = (s**2).mean(1).reshape(2, -1)
        a_t = (t**2).mean(1).reshape(2, -1)
        a_s /= np.linalg.norm(a_s, axis=1, keepdims=True)
        a_t /= np.linalg.norm(a_t, axis=1, keepdims=True)
        expected += ((a_s - a_t) ** 2).mean()
    _close(L.at_loss([_t(s) for s, _ in pairs], [_t(t) for _, t in pairs], p=2), expected)


def test_sp_loss_compares_row_normalised_gram_matrices():
    s, t = RNG.normal(size=(4, 3, 2, 2)), RNG.normal(size=(4, 5, 2, 2))
    g_s, g_t = s.reshape(4, -1) @ s.reshape(4, -1).T, t.reshape(4, -1) @ t.reshape(4, -1).T
    g_s /= np.linalg.norm(g_s, axis=1, keepdims=True)
    g_t /= np.linalg.norm(g_t, axis=1, keepdims=True)
    _close(L.sp_loss([_t(s)], [_t(t)]), ((g_t - g_s) ** 2).sum() / 16)


def test_nst_loss_is_polynomial_mmd_of_normalised_channels():
    s, t = RNG.normal(size=(2, 3, 4, 4)), RNG.normal(size=(2, 4, 2, 2))
    s, t = _match(s, t)
    fs = s.reshape(2, 3, -1)
    ft = t.reshape(2, 4, -1)
    fs /= np.linalg.norm(fs, axis=2, keepdims=True)
    ft /= np.linalg.norm(ft, axis=2, keepdims=True)

    def k(a, b):
        return np.mean([[(a[n, i] @ b[n, j]) ** 2 for i in range(a.shape[1]) for j in range(b.shape[1])]
                        for n in range(2)])

    _close(L.nst_loss([_t(s)], [_t(t)]), k(ft, ft) + k(fs, fs) - 2 * k(fs, ft))


def test_fsp_loss_matches_gram_of_consecutive_maps():
    s = [RNG.normal(size=(2, 2, 4, 4)), RNG.normal(size=(2, 3, 2, 2)), RNG.normal(size=(2, 3, 2, 2))]
    t = [RNG.normal(size=(2, 2, 8, 8)), RNG.normal(size=(2, 3, 4, 4)), RNG.normal(size=(2, 3, 2, 2))]

    def fsp(feats):
        out = []
        for bot, top in zip(feats[:-1], feats[1:]):
            bot, top = _match(bot, top)
            g = np.zeros((2, top.shape[1], bot.shape[1]))
            for n in range(2):
                for j in range(top.shape[1]):
                    for i in range(bot.shape[1]):
                        g[n, j, i] = (top[n, j] * bot[n, i]).mean()
            out.append(g)
        return out

    expected = sum(((a - b) ** 2).mean() for a, b in zip(fsp(s), fsp(t)))
    _close(L.fsp_loss([_t(x) for x in s], [_t(x) for x in t]), expected)


def test_ab_loss_penalises_the_wrong_side_of_the_boundary_with_stage_weights():
    s = [RNG.normal(size=(2, 2, 2, 2)) * 2, RNG.normal(size=(2, 3, 1, 1)) * 2]
    t = [RNG.normal(size=(2, 2, 2, 2)), RNG.normal(size=(2, 3, 1, 1))]
    expected = 0.0
    for i, (a, b) in enumerate(zip(s, t)):
        total = 0.0
        for x, y in zip(a.ravel(), b.ravel()):
            if y <= 0 and x > -1:
                total += (x + 1) ** 2
            if y > 0 and x <= 1:
                total += (x - 1) ** 2
        expected += 2.0 ** (i - 2 + 1) * total / 2 * 3 / 1000
    _close(L.ab_loss([_t(x) for x in s], [_t(x) for x in t]), expected)
    # a hand value: one entry, teacher active, student at 0 → (0 − 1)² · 2⁰ / 1 · 3/1000
    _close(L.ab_loss([torch.zeros(1, 1, 1, 1)], [torch.ones(1, 1, 1, 1)]), 3 / 1000, 1e-7)


def test_ft_loss_is_l1_between_normalised_factor_attention():
    s, t = RNG.normal(size=(2, 3, 4, 4)), RNG.normal(size=(2, 2, 2, 2))
    s, t = _match(s, t)
    f_s = (s**2).mean(1).reshape(2, -1)
    f_t = (t**2).mean(1).reshape(2, -1)
    f_s /= np.linalg.norm(f_s, axis=1, keepdims=True)
    f_t /= np.linalg.norm(f_t, axis=1, keepdims=True)
    _close(L.ft_loss(_t(s), _t(t)), np.abs(f_s - f_t).mean())


def test_vid_loss_is_gaussian_negative_log_likelihood():
    mu, t = RNG.normal(size=(2, 3, 2, 2)), RNG.normal(size=(2, 3, 2, 2))
    log_scale = RNG.normal(size=3)
    var = np.log1p(np.exp(log_scale)) + 1e-5
    v = var.reshape(1, 3, 1, 1)
    expected = (0.5 * ((mu - t) ** 2 / v + np.log(v))).mean()
    _close(L.vid_loss(_t(mu), _t(t), _t(log_scale)), expected)


def test_hcl_loss_weights_the_pyramid_levels():
    s, t = RNG.normal(size=(2, 3, 8, 8)), RNG.normal(size=(2, 3, 8, 8))
    s1, t1 = RNG.normal(size=(2, 4, 1, 1)), RNG.normal(size=(2, 4, 1, 1))
    level = ((s - t) ** 2).mean()
    for size, w in ((4, 0.5), (2, 0.25), (1, 0.125)):
        level += w * ((_pool(s, size) - _pool(t, size)) ** 2).mean()
    level /= 1 + 0.5 + 0.25 + 0.125
    expected = level + ((s1 - t1) ** 2).mean()  # a 1×1 map has no pyramid
    _close(L.hcl_loss([_t(s), _t(s1)], [_t(t), _t(t1)]), expected)


# ----------------------------------------------------------------------------------------------- embeddings
def test_pkt_loss_averages_kl_over_the_whole_similarity_matrix():
    s, t = RNG.normal(size=(5, 4)), RNG.normal(size=(5, 6))

    def cond(x):
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-7)
        sim = (x @ x.T + 1) / 2
        return sim / sim.sum(1, keepdims=True)

    p, q = cond(s), cond(t)
    _close(L.pkt_loss(_t(s), _t(t)), (q * np.log((q + 1e-7) / (p + 1e-7))).mean())


def test_rkd_loss_is_weighted_distance_and_angle_huber():
    s, t = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 5))

    def dist(e):
        d = np.array([[np.linalg.norm(a - b) if i != j else 0.0 for j, b in enumerate(e)] for i, a in enumerate(e)])
        return d / d[d > 0].mean()

    def angles(e):
        n = len(e)
        out = np.zeros((n, n, n))
        for i in range(n):
            for j in range(n):
                for k in range(n):
                    u, v = e[j] - e[i], e[k] - e[i]
                    if j != i and k != i:
                        out[i, j, k] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
        return out.ravel()

    expected = 25 * _huber(dist(s), dist(t)) + 50 * _huber(angles(s), angles(t))
    _close(L.rkd_loss(_t(s), _t(t), 25.0, 50.0), expected, 1e-7)


def test_cc_loss_correlates_consecutive_samples():
    s, t = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
    d = np.abs(s - t)
    _close(L.cc_loss(_t(s), _t(t)), np.mean([(d[i] * d[i + 1]).sum() for i in range(3)]))
    # a hand value: δ = [[1], [2], [3]] → (1·2 + 2·3) / 2 = 4
    _close(L.cc_loss(torch.tensor([[1.0], [2.0], [3.0]]), torch.zeros(3, 1)), 4.0)


def test_nce_loss_and_contrast_scores_match_crd_eq18():
    b, k, n_data, dim, tau = 3, 4, 50, 6, 0.07
    memory = RNG.normal(size=(n_data, dim))
    anchor = RNG.normal(size=(b, dim))
    idx = RNG.integers(0, n_data, size=(b, k + 1))
    raw = np.exp(np.einsum("bkd,bd->bk", memory[idx], anchor) / tau)
    torch_raw = L.contrast_scores(_t(anchor), _t(memory), torch.tensor(idx), tau)
    np.testing.assert_allclose(torch_raw.numpy(), raw, rtol=1e-9)
    scores = raw / (raw.mean() * n_data)
    noise = k / n_data
    expected = -(np.log(scores[:, 0] / (scores[:, 0] + noise + 1e-7)).sum()
                 + np.log(noise / (scores[:, 1:] + noise + 1e-7)).sum()) / b
    _close(L.nce_loss(_t(scores), n_data), expected)


def test_other_class_negatives_are_distinct_and_of_other_classes():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3])
    gen = torch.Generator().manual_seed(0)
    anchors = torch.tensor([0, 1, 2, 3])
    neg = L.sample_other_class(labels, anchors, 6, gen)
    assert neg.shape == (4, 6)
    for a, row in zip(anchors.tolist(), neg.tolist()):
        assert len(set(row)) == 6 and all(labels[i] != a for i in row)
    # the same generator state draws the same negatives (resumed runs replay)
    again = L.sample_other_class(labels, anchors, 6, torch.Generator().manual_seed(0))
    assert torch.equal(neg, again)
    assert math.isfinite(float(neg.float().mean()))


# ----------------------------------------------------------------------------------------------- tiny batches
def _cc_before(s, t):  # cc_loss before the one-sample guard (commit 7624062)
    delta = (s - t).abs()
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()


def _rkd_before(s, t, w_dist=25.0, w_angle=50.0):  # rkd_loss before the one-sample guard (commit 7624062)
    from mcmikd.distill.methods.rkd import _angles, _normalised_distances

    s, t = s.flatten(1), t.flatten(1).detach()
    loss_d = torch.nn.functional.smooth_l1_loss(_normalised_distances(s), _normalised_distances(t))
    return w_dist * loss_d + w_angle * torch.nn.functional.smooth_l1_loss(_angles(s), _angles(t))


@pytest.mark.parametrize("b", [2, 3, 64])
def test_cc_and_rkd_are_bit_identical_to_before_on_two_or_more_samples(b):
    g = torch.Generator().manual_seed(b)
    s, t = torch.randn(b, 16, generator=g), torch.randn(b, 16, generator=g)
    assert torch.equal(L.cc_loss(s, t), _cc_before(s, t))
    assert torch.equal(L.rkd_loss(s, t), _rkd_before(s, t))


@pytest.mark.parametrize("loss, before", [(L.cc_loss, _cc_before), (L.rkd_loss, _rkd_before)])
def test_cc_and_rkd_are_zero_not_nan_on_one_sample(loss, before):
    s, t = torch.randn(1, 8, requires_grad=True), torch.randn(1, 8)
    assert torch.isnan(before(s, t))  # what the guard prevents
    value = loss(s, t)
    assert float(value.detach()) == 0.0
    value.backward()
    assert torch.equal(s.grad, torch.zeros(1, 8))
