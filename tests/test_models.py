import hashlib
from functools import cache

import pytest
import torch
import torch.nn.functional as F

from mcmikd.errors import ConfigError
from mcmikd.models import MODELS, create_model, feature_shapes
from mcmikd.models.shufflenetv1 import channel_shuffle

# Oracle from RepDistiller (github.com/HobbitLong/RepDistiller, commit b84f547c5db6a35318d4671d7d5c4de74c822403):
# `model_dict[name](num_classes=100)` gives the parameter count and the state-dict layout, i.e. the first 16 hex
# digits of sha256("\n".join(f"{key}:{tuple(shape)}" for key, shape in sorted(state_dict))). Equal layouts mean
# RepDistiller checkpoints load into these models with `load_state_dict(strict=True)`.
REPDISTILLER = {
    "resnet8": (83_892, "166d31a811b31c5f"),
    "resnet14": (181_108, "8525efa6fc491f19"),
    "resnet20": (278_324, "6db44f39e3bff21f"),
    "resnet32": (472_756, "325ee6108709f7b5"),
    "resnet44": (667_188, "f1263f7b0ed71e1a"),
    "resnet56": (861_620, "3977b81559d8630f"),
    "resnet110": (1_736_564, "7f8e5ac1814e480a"),
    "resnet8x4": (1_233_540, "5d5871b403f3a649"),
    "resnet32x4": (7_433_860, "610ad29043c56b33"),
    "wrn_16_1": (180_916, "f6cf46040022f13d"),
    "wrn_16_2": (703_284, "bdbc50a2b3205f84"),
    "wrn_40_1": (569_780, "deef22602ae7584b"),
    "wrn_40_2": (2_255_156, "bf5731c8e8e2b95f"),
    "vgg8": (3_965_028, "d9f8d7533423754e"),
    "vgg11": (9_277_284, "6592bd1869a5938f"),
    "vgg13": (9_462_180, "7bec65f1ca17a0bf"),
    "vgg16": (14_774_436, "b420ddff7e4306ec"),
    "vgg19": (20_086_692, "2d318270df30c723"),
    "MobileNetV2": (812_836, "10e9036e17013c38"),
    "ShuffleV1": (949_258, "eb3bcbc847930cce"),
    "ShuffleV2": (1_355_528, "b7e2c3e764687767"),
    "ResNet50": (23_705_252, "d4a9e0738c8f8385"),
}

# Number of `feats` maps per family (RepDistiller's is_feat list without its pooled vector).
FEATURE_COUNT = {"resnet": 4, "wrn": 4, "vgg": 5, "MobileNetV2": 5, "ShuffleV1": 4, "ShuffleV2": 4, "ResNet50": 5}


def _family(name: str) -> str:
    return next(f for f in FEATURE_COUNT if name.startswith(f))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These batches are tiny: intra-op threads only add synchronisation, which is very slow on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@cache
def _model(name: str, num_classes: int = 100, in_channels: int = 3):
    torch.manual_seed(0)
    return create_model(name, num_classes, in_channels).eval()


def test_the_zoo_is_repdistillers():
    assert set(MODELS) == set(REPDISTILLER)


@pytest.mark.parametrize("name", REPDISTILLER)
def test_parameters_and_state_dict_layout_match_repdistiller(name):
    model = _model(name)
    params, layout = REPDISTILLER[name]
    assert sum(p.numel() for p in model.parameters()) == params
    signature = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(model.state_dict().items()))
    assert hashlib.sha256(signature.encode()).hexdigest()[:16] == layout


def _run(model, x):
    """`model(x)` recording the cam layer's output and checking that every module returns a tensor (so hooks
    work), then `model.forward_features(x)`."""
    seen, bad = [], []

    def check(module, _inputs, output):
        if not isinstance(output, torch.Tensor):
            bad.append(type(module).__name__)

    handles = [m.register_forward_hook(check) for m in model.modules()]
    handles.append(model.get_submodule(model.cam_layer).register_forward_hook(lambda m, i, o: seen.append(o)))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    assert not bad, f"modules returning non-tensors: {bad}"
    assert len(seen) == 1, "the cam layer must run once per forward pass"
    with torch.no_grad():
        return logits, model.forward_features(x), seen[0]


@pytest.mark.parametrize("name", REPDISTILLER)
@pytest.mark.parametrize("in_channels,size,num_classes", [(3, 32, 100), (1, 16, 10)])
def test_forward_features_are_consistent(name, in_channels, size, num_classes):
    model = _model(name, num_classes, in_channels)
    x = torch.randn(2, in_channels, size, size, generator=torch.Generator().manual_seed(1))
    logits, out, cam_map = _run(model, x)

    assert logits.shape == (2, num_classes)
    torch.testing.assert_close(out.logits, logits)
    assert len(out.feats) == len(out.preact_feats) == len(model.stage_channels) == FEATURE_COUNT[_family(name)]
    assert [f.shape[1] for f in out.feats] == model.stage_channels
    assert [f.shape for f in out.preact_feats] == [f.shape for f in out.feats]
    assert out.pooled.shape == (2, model.embedding_dim)
    # The cam layer's map is exactly what global pooling turns into the embedding.
    assert cam_map.dim() == 4 and cam_map.shape[1] == model.embedding_dim
    torch.testing.assert_close(cam_map.mean(dim=(2, 3)), out.pooled)


@pytest.mark.parametrize("name,in_channels,size", [("resnet8x4", 3, 32), ("wrn_16_2", 1, 16), ("vgg8", 1, 32),
                                                   ("MobileNetV2", 3, 16), ("ShuffleV2", 3, 32), ("ResNet50", 1, 16)])
def test_meta_device_shapes_match_a_real_run(name, in_channels, size):
    model = _model(name, 10, in_channels)
    with torch.no_grad():
        out = model.forward_features(torch.zeros(1, in_channels, size, size))
    shapes = feature_shapes(name, 10, in_channels, size)
    assert shapes["feats"] == [tuple(f.shape[1:]) for f in out.feats]
    assert shapes["preact_feats"] == [tuple(f.shape[1:]) for f in out.preact_feats]
    assert (shapes["pooled"], shapes["logits"]) == (model.embedding_dim, 10)


@pytest.mark.parametrize("name", ["resnet8", "resnet8x4", "ResNet50", "vgg8", "ShuffleV1", "ShuffleV2", "wrn_16_2",
                                  "MobileNetV2"])
def test_preact_feats_are_repdistillers(name):
    model = _model(name)
    with torch.no_grad():
        out = model.forward_features(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
    feats, pre = out.feats, out.preact_feats
    torch.testing.assert_close(pre[0], feats[0])  # the stem output appears in both lists
    family = _family(name)
    if family == "MobileNetV2":  # linear bottlenecks: no ReLU to be before
        assert all(p is f for p, f in zip(pre, feats))
    elif family == "wrn":  # pre-activation blocks: preact = the BN the next stage applies before its ReLU
        assert (pre[-1] < 0).any() and (feats[-1] < 0).any()
        torch.testing.assert_close(F.relu(pre[-1]).mean(dim=(2, 3)), out.pooled)
        torch.testing.assert_close(pre[1], model.block2.layer[0].bn1(feats[1]))
    elif family == "ShuffleV2":  # the preact concatenation is taken before the channel shuffle
        for p, f in zip(pre[1:], feats[1:]):
            assert (p < 0).any()
            torch.testing.assert_close(channel_shuffle(F.relu(p), 2), f)
    else:  # stage output = ReLU(residual sum / last BN)
        for p, f in zip(pre[1:], feats[1:]):
            assert (p < 0).any()
            torch.testing.assert_close(F.relu(p), f)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet50"])
def test_training_step_backpropagates_through_all_features(name):
    model = create_model(name, 10, in_channels=1).train()
    out = model.forward_features(torch.randn(2, 1, 16, 16))
    loss = out.logits.sum() + sum(f.mean() for f in out.feats + out.preact_feats) + out.pooled.mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_vgg_pools_before_its_last_block_only_for_64px_inputs():
    with torch.no_grad():
        out = _model("vgg8").forward_features(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in out.feats] == [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8),
                                                       (512, 4, 4)]


@pytest.mark.parametrize("name", ["resnet8x4", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2"])
def test_channels_last_gives_the_same_logits(name):
    model = _model(name)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(x)
        fast = create_model(name, 100).eval()
        fast.load_state_dict(model.state_dict())
        fast = fast.to(memory_format=torch.channels_last)
        got = fast.forward_features(x.to(memory_format=torch.channels_last)).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_unknown_model_lists_the_known_names():
    with pytest.raises(ConfigError, match="unknown model 'resnet9'") as err:
        create_model("resnet9", 10)
    assert all(name in str(err.value) for name in MODELS)
