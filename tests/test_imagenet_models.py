"""The ImageNet zoo (issue 21): torchvision's ResNet-18/34/50 under torchvision's names and the KD literature's
MobileNet-V1, as `ClassifierNet`s with `forward_features`."""

import pytest
import torch

from mcmikd.errors import ConfigError, DataError
from mcmikd.models import CIFAR_MODELS, IMAGENET_MODELS, MODELS, SMALL_LR_MODELS, create_model, feature_shapes

# Parameter counts at 1000 classes, 3 input channels. ResNets: torchvision's own models (weights=None), whose
# documented counts (torchvision model pages: 11,689,512 / 21,797,672 / 25,557,032) are computed here again from
# torchvision's modules, not copied. MobileNet-V1 1.0× at 224 px: Howard et al. 2017, Table 8, "4.2 million";
# 4,231,976 is that architecture counted layer by layer (conv 864 + BN 64, 13 separable blocks, fc 1,025,000).
RESNET_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _separable_count() -> int:
    """MobileNet-V1's parameters from Howard et al. Table 1, written out: conv + BN weights and biases."""
    total = 3 * 3 * 3 * 32 + 2 * 32  # stem conv, BN
    widths = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    for c_in, c_out in zip(widths, widths[1:]):
        total += 9 * c_in + 2 * c_in + c_in * c_out + 2 * c_out  # depthwise, BN, pointwise, BN
    return total + 1024 * 1000 + 1000


def test_the_zoos_share_no_name_and_model_names_name_both():
    assert not set(CIFAR_MODELS) & set(IMAGENET_MODELS)
    assert not {n.lower() for n in IMAGENET_MODELS if n != "resnet50"} & {n.lower() for n in CIFAR_MODELS}
    assert MODELS == {**CIFAR_MODELS, **IMAGENET_MODELS}
    assert "MobileNetV1" not in SMALL_LR_MODELS  # mdistiller trains it with the ResNets' learning rate


@pytest.mark.parametrize("name", sorted(RESNET_PARAMS))
def test_resnets_are_torchvisions_architecture(name):
    import torchvision

    with torch.device("meta"):
        ours = create_model(name, 1000, 3)
        theirs = getattr(torchvision.models, name)(weights=None)
    assert _count(ours) == _count(theirs) == RESNET_PARAMS[name]
    # the same state-dict keys and shapes: torchvision's released weights load with load_state_dict
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_mobilenetv1_has_the_published_parameter_count():
    with torch.device("meta"):
        model = create_model("MobileNetV1", 1000, 3)
    assert _count(model) == _separable_count() == 4_231_976
    assert round(_count(model) / 1e6, 1) == 4.2  # Howard et al. 2017, Table 8


@pytest.mark.parametrize("name", sorted(IMAGENET_MODELS))
def test_forward_features_agree_with_forward_at_a_small_input(name):
    torch.manual_seed(0)
    model = create_model(name, 7, 3).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model.forward_features(x)
        logits = model(x)
    assert torch.equal(out.logits, logits) and logits.shape == (2, 7)
    assert [f.shape[1] for f in out.feats] == model.stage_channels
    assert [f.shape[-1] for f in out.feats] == [32, 16, 8, 4, 2]  # stride 2 per stage, stem at 1/2
    assert out.pooled.shape == (2, model.embedding_dim)
    for f, p in zip(out.feats[1:], out.preact_feats[1:]):
        assert torch.equal(f, torch.relu(p)) and (p < 0).any()  # pre-activations: before the last ReLU
    assert feature_shapes(name, 7, 3, 64) == {"feats": [tuple(f.shape[1:]) for f in out.feats],
                                              "preact_feats": [tuple(f.shape[1:]) for f in out.preact_feats],
                                              "pooled": model.embedding_dim, "logits": 7}


@pytest.mark.parametrize("name,channels", [("resnet18", [64, 64, 128, 256, 512]),
                                           ("resnet50", [64, 256, 512, 1024, 2048]),
                                           ("MobileNetV1", [64, 128, 256, 512, 1024])])
def test_224px_feature_shapes_line_up_across_the_imagenet_pairs(name, channels):
    shapes = feature_shapes(name, 1000, 3, 224)
    assert shapes["feats"] == [(c, s, s) for c, s in zip(channels, (112, 56, 28, 14, 7))]


def test_a_gray_input_rebuilds_only_the_stem_and_training_reaches_every_stage():
    torch.manual_seed(0)
    model = create_model("resnet18", 5, 1).train()
    out = model.forward_features(torch.randn(4, 1, 32, 32))
    (out.logits.sum() + sum(f.mean() for f in out.feats)).backward()
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert all(p.grad is not None for p in model.parameters())


def test_torchvision_weights_load_from_a_local_file_only(tmp_path):
    import torchvision

    from mcmikd.jobs.teacher import load_weights

    torch.manual_seed(3)
    source = torchvision.models.resnet18(weights=None, num_classes=10)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)  # as torchvision's released files: a plain state dict
    model, meta = load_weights(str(path), "resnet18", 10, 3)
    x = torch.randn(2, 3, 64, 64)
    assert meta == {} and torch.allclose(model.eval()(x), source.eval()(x), atol=1e-5)
    with pytest.raises(DataError, match="absent.pth is unreadable"):
        load_weights(str(tmp_path / "absent.pth"), "resnet18", 10, 3)
    with pytest.raises(ConfigError, match="does not fit a resnet34 of 10 classes"):
        load_weights(str(path), "resnet34", 10, 3)
