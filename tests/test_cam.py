import pytest
import torch

from mcmikd.cam import eigen_cam, principal_projection, upsample

# training numbers: run again under another CPU kernel set by `make test-kernels`
pytestmark = pytest.mark.numeric


def _planted(pattern: torch.Tensor, channels: int = 12, noise: float = 0.01, seed: int = 0) -> torch.Tensor:
    """Activations whose channels are positive multiples of one spatial pattern, plus small noise."""
    gen = torch.Generator().manual_seed(seed)
    weights = torch.rand(channels, generator=gen) + 0.5
    acts = weights.view(-1, 1, 1) * pattern.unsqueeze(0)
    return (acts + noise * torch.randn(acts.shape, generator=gen)).unsqueeze(0)


def test_recovers_the_planted_pattern_without_centring():
    pattern = torch.zeros(6, 6)
    pattern[1:3, 2:5] = 1.0
    cam = eigen_cam(_planted(pattern), center=False)[0]
    assert cam.shape == (6, 6)
    assert cam.min() == 0 and abs(cam.max().item() - 1) < 1e-6
    assert cam[pattern > 0].min() > 0.9  # the object is on...
    assert cam[pattern == 0].max() < 0.1  # ...and the background off


def test_sign_rule_follows_the_activations_with_centring():
    pattern = torch.zeros(8, 8)
    pattern[4:7, 1:4] = 2.0
    cam = eigen_cam(_planted(pattern, seed=3), center=True)[0]
    assert cam[pattern > 0].mean() > 0.8 and cam[pattern == 0].mean() < 0.2


def test_projection_always_correlates_positively_with_the_channel_mean_map():
    gen = torch.Generator().manual_seed(5)
    acts = torch.relu(torch.randn(64, 9, 6, 6, generator=gen))
    proj = principal_projection(acts).flatten(1)
    ref = acts.mean(dim=1).flatten(1)
    ref = ref - ref.mean(dim=1, keepdim=True)
    assert ((proj * ref).sum(dim=1) >= 0).all()


def test_result_does_not_depend_on_the_sign_the_svd_returns(monkeypatch):
    acts = torch.relu(torch.randn(4, 9, 6, 6, generator=torch.Generator().manual_seed(6)))
    expected = eigen_cam(acts)
    real_svd = torch.linalg.svd

    def flipped_svd(a, full_matrices=True):
        u, s, vh = real_svd(a, full_matrices=full_matrices)
        return -u, s, -vh  # an equally valid decomposition, as another LAPACK build may return

    monkeypatch.setattr(torch.linalg, "svd", flipped_svd)
    assert torch.allclose(eigen_cam(acts), expected, atol=1e-6)


def test_batched_matches_per_image_and_is_in_unit_range():
    torch.manual_seed(0)
    acts = torch.relu(torch.randn(5, 16, 7, 7))
    batch = eigen_cam(acts)
    single = torch.stack([eigen_cam(a.unsqueeze(0))[0] for a in acts])
    assert batch.shape == (5, 7, 7)
    assert torch.allclose(batch, single, atol=1e-5)
    assert batch.min() >= 0 and batch.max() <= 1
    assert torch.allclose(batch.flatten(1).max(1).values, torch.ones(5))


def test_matches_an_svd_reference_up_to_the_sign_rule():
    torch.manual_seed(4)
    acts = torch.relu(torch.randn(1, 10, 5, 5))
    o = acts[0].reshape(10, 25).T.double()
    o = o - o.mean(0)
    _, _, vt = torch.linalg.svd(o, full_matrices=True)
    ref = (o @ vt[0]).float().reshape(5, 5)
    proj = principal_projection(acts)[0]
    assert torch.allclose(proj.abs(), ref.abs(), atol=1e-4)


def test_constant_activations_give_an_all_zero_map():
    cam = eigen_cam(torch.ones(2, 4, 3, 3))
    assert torch.equal(cam, torch.zeros(2, 3, 3))


def test_upsample_keeps_range_and_size():
    maps = eigen_cam(torch.relu(torch.randn(3, 8, 4, 4)))
    up = upsample(maps, (16, 16))
    assert up.shape == (3, 16, 16) and up.min() >= 0 and up.max() <= 1


def test_every_models_cam_layer_is_checked_on_the_meta_device(load):
    """`auto` is a 4-D map of every architecture at CIFAR size; a layer a model lacks, or one without a spatial map,
    is one line naming the key, the layer, the model and valid layers (before any job, no memory used)."""
    import pytest

    from mcmikd.checks import check_cam_layers
    from mcmikd.errors import ConfigError
    from mcmikd.models import CIFAR_MODELS, IMAGENET_MODELS

    grid = load(lambda c: c["experiments"]["cam"].update(teachers=list(CIFAR_MODELS)))
    assert check_cam_layers(grid, 100, 3, 32) == len(CIFAR_MODELS)
    grid = load(lambda c: c["experiments"]["cam"].update(teachers=list(IMAGENET_MODELS)))
    assert check_cam_layers(grid, 10, 3, 64) == len(IMAGENET_MODELS)  # layer4 is 2×2 at 64 px, 1×1 at 32 px
    assert check_cam_layers(load(lambda c: c["experiments"]["cam"].update(layer="layer2")), 10, 1, 32) == 1
    for layer, problem in [("layer9", "resnet20 has no layer 'layer9'"),
                           ("fc", "layer 'fc' of resnet20 gives no (N, C, H, W) map larger than 1×1"),
                           ("layer3.0.conv", "resnet20 has no layer 'layer3.0.conv'")]:
        with pytest.raises(ConfigError) as info:  # load() calls the mutation at once, with this layer
            check_cam_layers(load(lambda c: c["experiments"]["cam"].update(layer=layer)), 10, 1, 32)  # noqa: B023
        message = str(info.value)
        assert message.startswith(f"config key 'experiments.cam.layer': {problem}; use 'auto' (= layer3) or another "
                                  f"layer of resnet20, e.g. ")
        assert "e.g. layer3, " in message and "\n" not in message
