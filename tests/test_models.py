import hashlib
import platform
from functools import cache

import pytest
import torch
import torch.nn.functional as F

from mcmikd.errors import ConfigError
from mcmikd.models import CIFAR_MODELS, MODELS, create_model, feature_shapes
from mcmikd.models.base import init_weights
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

# Initialisation fingerprints: sha256 over every state-dict key and the bytes of its tensor (parameters and buffers,
# in state_dict order) of `create_model(name, 10, 3)` built right after `torch.manual_seed(0)`. They pin each
# architecture's weight initialisation bit for bit (which modules are initialised, in which order, with which RNG
# draws), recorded before the init loops were merged into `mcmikd.models.base.init_weights`. The draws depend on
# the torch version and on ATen's CPU kernels: x86 AVX2 and AVX512 builds give the first table, the scalar kernels
# (ATEN_CPU_CAPABILITY=default) the second; elsewhere the test is skipped rather than failing for a reason that is
# not the model code. Regenerate with `{name: _init_fingerprint(name) for name in CIFAR_MODELS}` only for a torch
# upgrade.
INIT_FINGERPRINT_TORCH = "2.14.1"
INIT_FINGERPRINTS = {
    "vectorised": {
        "resnet8": "3797d5adc262be18a5a556c407d1bfc64be95c36fe7520753934c73f96315610",
        "resnet14": "8ec6fe2450a089f721aa6577c4ebe2009181ba0a7f1498d07489524126854a6d",
        "resnet20": "fd394c1faade9a9632a30229e98420fe55e28c3848f15ddecf391d26bc54965c",
        "resnet32": "bc7af54207282a1366f6582923357ad37fbb6707f3c5f84ba144bc46e9d3d2b2",
        "resnet44": "a39df82bca26197029a3556aeded16bc77876eacd947543cfcca65f11269eceb",
        "resnet56": "c46b6f5d51a54d63e737c6ce62e3f17df1aaad7276864a2cdf73868f46d55f93",
        "resnet110": "5bd9b492d9aee21a98eff240c4ec11e9cafa7c05b35f48bd4721762dacbb65a9",
        "resnet8x4": "250ad06dafde51745fca430d1fedec76c8d50ff26957bf5c622aa2f2cd5c1225",
        "resnet32x4": "eb435c0e9738a6ea58233f7b17d8e3508e40e669433e59d6014c3aba8da99d01",
        "wrn_16_1": "f889374dd6cc9aef68be7f3f654c87e562599bc1998b5a41366e74627a7ce244",
        "wrn_16_2": "c01d9949deee8c3400aebcbf108c0fb1193c65cead940f7a25a15d3e6144e9e3",
        "wrn_40_1": "d232108cbffd94a8634a74f526e16595aa741ffd17b03e7615c545e80d2a1400",
        "wrn_40_2": "3ed6475497ef732b5e198db4829053907e0c3f02316bd213efbd5e1b7d63d2ff",
        "vgg8": "de777b562bc82a0dc62cdf3356b90999ecaf15d0061d76b03567e91a1e29d7fc",
        "vgg11": "3d04341f639c9687fd1fc3de55af926e9ff8e7eb89a66312bb020e27cdc1b3bf",
        "vgg13": "f4016da613d73c30076ee6bea563ab47d82fea8f876ee23e62b4388f68cea216",
        "vgg16": "0efc728f8ed96b812f9b51f05758374dece58fc980af8202ae8614666ad59ab8",
        "vgg19": "eb96974d356addaafef7c818e0dc7cb06f0ec37cec835ee0208b8b8b5bb338fe",
        "MobileNetV2": "f1b00cff0657ed5ec0921a459ea9e62f2022c91de505ec19f4066660f3d1aa7b",
        "ShuffleV1": "cbdd005d06bbabfaca7e7efa7f8b6b71b96654e8547e54f67275f4383591f8b4",
        "ShuffleV2": "5858ecec0854641487812f9d8f8d6fa7742df16187df9b81c89b25b52447334b",
        "ResNet50": "0c2ee97d14f5304c5549ee05008c3281c71baddbdc24901824b5db8274dc429d",
    },
    "scalar": {
        "resnet8": "ca3f8f37cc1b43a2fb8cbee10cef7b5d3393e71dcf73f4bb6fda8f1ac79d9d1a",
        "resnet14": "ce502fd9ff5f44e643782f18c081537c5cd49ae9ab3d517d2d91fc23f2fcf2e9",
        "resnet20": "79eb30843574462f2d0123bf766449facdeb5edb346323502360f3cf43123397",
        "resnet32": "129bde4516c72a0ceb2e16a6e0a6e44fa5bb2929a84b44cceff29237fabb7b22",
        "resnet44": "4d9dbdea017527981a3a1955d1f298c182dfc36adea0e2bd34a3916a476a7684",
        "resnet56": "d8ee6ce8cf4819d8a718269e7f2edbb85fb78349d4cb9422cb1e6abbcb81fa04",
        "resnet110": "eed0cc0bad1b913176cea0b4aa8cc13b7d94097fd539266fec7f959af39cc68f",
        "resnet8x4": "4c7979732c61c23e1e93d9093b3074576858228023c17c8d8093cbe04a5e128d",
        "resnet32x4": "33670347176baeb6c513896e83c0722a7466962858e2213d43e393e4a084fcc5",
        "wrn_16_1": "51f9876d26a16ea4b8fa90de2a8154de987e30020c8aa22e801993c86328355a",
        "wrn_16_2": "ae1399768b8460145394c84541b7c6e8d9afe87adc944629c5aea4281522d91d",
        "wrn_40_1": "724d991afccdfe7f466398183c411351bd34f2657a3ed2cf751813a6dac8b872",
        "wrn_40_2": "4b1a1490370a47e1ff041f8484bc077f5140b086b297d50a4b7792abcf77fba2",
        "vgg8": "16ee56f87a1e1d258fde982041ba76cd24dcd7cee2e1fa170a81e245814b62de",
        "vgg11": "6750aa9215e3b1f83ff0cbe25063ed8187a4329cfa50c8d8fe4e820532d43efa",
        "vgg13": "c1f8f6882a450a1d67d7d11375f028b6ca01608ac3f31cafe04d39dd9f509cdc",
        "vgg16": "3a94276f923742b3d3415c5c5b614c62e778509aadec312b75720e914eb3ca84",
        "vgg19": "758420c65b125a2da859009cd81261ac063f6e4f872ed91b1221f4b4b40eb903",
        "MobileNetV2": "87557f257d62abeb09096a846e05e8d911c1e8fc038734d59f8cb57c66097931",
        "ShuffleV1": "a6b3ebe7035baf3a561ec73f362ade4773c7c39c59cffbc1f2f35644a4ca0878",
        "ShuffleV2": "0ae2635684d9daf6767d5cf656e3315b05dc28f916aeabde66d455f4b914aab0",
        "ResNet50": "3845128da35b7f0dfd3e5882151718137b6debdf1ab463301470f36a23d214de",
    },
}
_CPU_KERNELS = {"AVX2": "vectorised", "AVX512": "vectorised", "DEFAULT": "scalar"}


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


def test_the_cifar_zoo_is_repdistillers():
    assert set(CIFAR_MODELS) == set(REPDISTILLER)


@pytest.mark.parametrize("name", REPDISTILLER)
def test_parameters_and_state_dict_layout_match_repdistiller(name):
    model = _model(name)
    params, layout = REPDISTILLER[name]
    assert sum(p.numel() for p in model.parameters()) == params
    signature = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(model.state_dict().items()))
    assert hashlib.sha256(signature.encode()).hexdigest()[:16] == layout


def _init_fingerprint(name: str) -> str:
    torch.manual_seed(0)
    digest = hashlib.sha256()
    for key, tensor in create_model(name, 10, 3).state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_initialisation_is_bit_identical_to_the_recorded_one():
    kernels = _CPU_KERNELS.get(torch.backends.cpu.get_cpu_capability())
    if torch.__version__.split("+")[0] != INIT_FINGERPRINT_TORCH or platform.machine() not in ("x86_64", "AMD64") \
            or kernels is None:
        pytest.skip(f"fingerprints were recorded with torch {INIT_FINGERPRINT_TORCH} on x86 CPUs")
    assert set(INIT_FINGERPRINTS[kernels]) == set(CIFAR_MODELS)  # the ImageNet zoo keeps torchvision's init
    got = {name: _init_fingerprint(name) for name in CIFAR_MODELS}
    assert {n: h for n, h in got.items() if h != INIT_FINGERPRINTS[kernels][n]} == {}


def test_init_weights_rejects_an_unknown_linear_rule():
    with pytest.raises(ValueError, match="linear must be"):
        init_weights(torch.nn.Linear(2, 2), linear="xavier")


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


@pytest.mark.parametrize("size_in, size_out", [((8, 8), (1, 1)), ((8, 8), (4, 4)), ((7, 5), (3, 2)), ((4, 4), (4, 4))])
def test_the_deterministic_cuda_pooling_computes_pytorchs_adaptive_average(size_in, size_out):
    """On CUDA with deterministic algorithms on, adaptive average pooling runs as a mean (global) or as matrix
    products (PyTorch's CUDA backward of it has no deterministic version); here, on the CPU, that path must give
    PyTorch's values and gradients, for bins that divide evenly and for those that overlap."""
    import torch.nn.functional as F

    from mcmikd.models.base import deterministic_avg_pool

    x = torch.randn(2, 3, *size_in, dtype=torch.float64, requires_grad=True)
    ours = deterministic_avg_pool(x, *size_out)  # global pooling: one mean; other sizes: matrix products
    ref = F.adaptive_avg_pool2d(x, size_out)
    assert torch.allclose(ours, ref, atol=1e-12)
    weights = torch.randn_like(ref)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), x)
    assert torch.allclose(g_ours, g_ref, atol=1e-12)


def test_pooling_on_the_cpu_is_pytorchs_own_kernel():
    """CPU results stay bit for bit what they were: off CUDA, `adaptive_avg_pool` is F.adaptive_avg_pool2d."""
    import torch.nn.functional as F

    from mcmikd.models.base import adaptive_avg_pool

    x = torch.randn(2, 5, 7, 7)
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.equal(adaptive_avg_pool(x, 1), F.adaptive_avg_pool2d(x, 1))
    finally:
        torch.use_deterministic_algorithms(False)
