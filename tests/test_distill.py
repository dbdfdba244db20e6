"""The distillation frameworks: registry, set-up checks, gradient flow, training steps (with init stages),
the per-pair tables of DKD and ReviewKD, CRD's memory bank, and a resumed engine run."""

import copy
from pathlib import Path

import pytest
import torch

from conftest import random_dataset
from mcmikd.checks import check_methods
from mcmikd.distill import METHODS, get_method, method_names, method_source_files
from mcmikd.distill.base import DistillContext
from mcmikd.errors import ConfigError
from mcmikd.models import create_model, feature_shapes

# training numbers: run again under another CPU kernel set by `make test-kernels`
pytestmark = pytest.mark.numeric

NUM_CLASSES, CHANNELS, SIZE, N_TRAIN, BATCH = 10, 1, 16, 40, 8
FEATURE_METHODS = [m for m in METHODS if m not in ("ce", "kd")]
TWO_STAGE = {"ab", "ft", "fsp"}
WITH_INIT = TWO_STAGE | {"hsakd"}  # methods with an init stage (HSAKD: the teacher's auxiliary heads)
SAME_PAIR = ("resnet14", "resnet8")
# a cross-architecture pair each method can match (AB needs as many stages, FSP the same channels)
CROSS_PAIR = {"ab": ("resnet14", "ShuffleV1"), "fsp": ("resnet14", "wrn_16_1"), "hsakd": ("resnet14", "MobileNetV2")}
DEFAULT_CROSS = ("vgg8", "ShuffleV1")
# FT's loss (β = 200 × an L1 between unit vectors of 4 elements on these 2×2 maps) has a gradient norm of about
# 6,400 at initialisation for vgg8 → ShuffleV1: plain SGD at any fixed lr (1e-3 … 1e-5 tried) oscillates and whether
# step 6 ends below step 1 depended on the CPU's kernels. Its main-stage steps here clip the gradient norm to 1
# (the loss then falls by ≥ 15 % in 6 steps under the native, AVX2 and SSE4.1 kernel sets).
MAIN_STAGE_CLIP = {"ft": 1.0}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ctx(teacher, student, n_train=N_TRAIN, labels=None):
    labels = torch.arange(n_train) % NUM_CLASSES if labels is None else labels
    return DistillContext(num_classes=NUM_CLASSES, num_train=n_train, train_labels=labels, in_channels=CHANNELS,
                          image_size=SIZE, epochs=5, student_arch=student, teacher_arch=teacher,
                          student_shapes=feature_shapes(student, NUM_CLASSES, CHANNELS, SIZE),
                          teacher_shapes=feature_shapes(teacher, NUM_CLASSES, CHANNELS, SIZE) if teacher else {})


def _build(method, teacher, student, hp=None, **ctx_kw):
    torch.manual_seed(0)
    cls = get_method(method)
    s = create_model(student, NUM_CLASSES, CHANNELS)
    t = create_model(teacher, NUM_CLASSES, CHANNELS) if cls.uses_teacher else None
    if t is not None:  # a "trained" teacher: its BN statistics are not the initial ones
        with torch.no_grad():
            t.train()
            t(torch.randn(16, CHANNELS, SIZE, SIZE))
    ctx = _ctx(teacher if cls.uses_teacher else "", student, **ctx_kw)
    cls.check_compatible(ctx.student_shapes, ctx.teacher_shapes, hp or {})
    return cls(s, t, hp or {}, ctx)


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, CHANNELS, SIZE, SIZE, generator=g)
    y = torch.arange(BATCH) % NUM_CLASSES
    return x, y, torch.arange(BATCH)


def _steps(distiller, params, loss_fn, n, lr, momentum=0.0, clip=None):
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    losses = []
    for _ in range(n):
        loss = sum(loss_fn().values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _train_and_check(method, pair, hp=None, steps=6):
    d = _build(method, *pair, hp=hp)
    d.train()
    x, y, idx = _batch()
    gen = torch.Generator().manual_seed(0)
    init = d.init_stage()
    if method in WITH_INIT and (hp or {}).get("init_epochs", 1):
        assert init is not None and init.epochs == d.hp["init_epochs"]
        init_losses = _steps(d, init.parameters, lambda: init.loss(x, y), steps, lr=init.lr or 0.01, momentum=0.9)
        assert init_losses[-1] < init_losses[0], (method, pair, init_losses)
    else:
        assert init is None
    losses = _steps(d, d.learnable_parameters(),
                    lambda: d.forward_train(x, y, epoch=3, indices=idx, generator=gen)[1], steps, lr=1e-3,
                    clip=MAIN_STAGE_CLIP.get(method))
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[-1] < losses[0], (method, pair, losses)
    return d


# ----------------------------------------------------------------------------------------------- registry
def test_every_registered_method_resolves_and_lists_existing_files():
    assert method_names()[:2] == ["ce", "kd"]
    for name in METHODS:
        cls = get_method(name)
        assert cls.name == name
        assert {"gamma"} <= set(cls.defaults)
        files = method_source_files(name)
        assert all(Path(f).is_file() for f in files), files
        assert any(f.endswith(f"{METHODS[name].split(':')[0].rsplit('.', 1)[1]}.py") for f in files)
    # a module that imports a shared module declares it, so an edit there reruns its jobs
    assert any(f.endswith("_common.py") for f in method_source_files("fitnet"))


def test_unknown_method_and_unknown_key_are_config_errors():
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        get_method("nope")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['bta'\]"):
        _build("at", *SAME_PAIR, hp={"bta": 3})


def test_defaults_follow_repdistiller_and_the_papers():
    beta = {m: get_method(m).defaults.get("beta") for m in FEATURE_METHODS}
    assert beta == {"fitnet": 100.0, "at": 1000.0, "sp": 3000.0, "cc": 0.02, "vid": 1.0, "rkd": 1.0, "pkt": 30000.0,
                    "ab": 1.0, "ft": 200.0, "fsp": 50.0, "nst": 50.0, "crd": 0.8, "dkd": None, "reviewkd": None,
                    "dist": 2.0, "hsakd": 1.0}
    for m in FEATURE_METHODS:
        d = get_method(m).defaults
        assert d["gamma"] == 1.0 and "temperature" in d
        if m not in ("dkd", "hsakd"):
            assert d["alpha"] == 0.0
    for m in TWO_STAGE:
        assert get_method(m).defaults["init_epochs"] == 30
    crd = get_method("crd").defaults
    assert (crd["feat_dim"], crd["nce_k"], crd["nce_t"], crd["nce_momentum"]) == (128, 16384, 0.07, 0.5)
    dkd = get_method("dkd").defaults
    assert (dkd["alpha"], dkd["temperature"], dkd["warmup"]) == (1.0, 4.0, 20)
    assert get_method("reviewkd").defaults["warmup"] == 20
    assert get_method("dist").defaults["temperature"] == 4.0
    hsakd = get_method("hsakd").defaults  # official train_student_cifar.py / train_teacher_freezed.sh
    assert (hsakd["gamma"], hsakd["alpha"], hsakd["beta"], hsakd["temperature"]) == (1.0, 1.0, 1.0, 3.0)
    assert (hsakd["init_epochs"], hsakd["init_lr"], hsakd["aux_blocks"]) == (100, 0.05, None)


@pytest.mark.parametrize("method, pair, hp, fragment", [
    ("fsp", ("resnet14", "MobileNetV2"), {}, "fsp needs feature maps with the same channels"),
    ("fsp", ("wrn_16_2", "wrn_16_1"), {}, "fsp needs feature maps with the same channels"),
    ("ab", ("vgg8", "ShuffleV1"), {}, "ab: the student has 3 stages and the teacher 4"),
    ("fitnet", SAME_PAIR, {"hint_layer": 4}, "fitnet: hint_layer 4 must be an integer in 0..3"),
])
def test_pairs_a_method_cannot_match_fail_before_training(method, pair, hp, fragment):
    cls = get_method(method)
    s = feature_shapes(pair[1], NUM_CLASSES, CHANNELS, SIZE)
    t = feature_shapes(pair[0], NUM_CLASSES, CHANNELS, SIZE)
    with pytest.raises(ConfigError) as info:
        cls.check_compatible(s, t, hp)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError):  # the constructor refuses too
        cls(create_model(pair[1], NUM_CLASSES, CHANNELS), create_model(pair[0], NUM_CLASSES, CHANNELS), hp,
            _ctx(*pair))


def test_preflight_builds_every_method_on_the_meta_device(load):
    def all_methods(cfg):
        cfg["experiments"]["main"]["methods"] = list(METHODS)
        cfg["experiments"]["main"]["pairs"] = [{"teacher": "resnet20", "student": "resnet8"},
                                               {"teacher": "resnet20", "student": "wrn_16_1"}]

    grid = load(all_methods)
    n = check_methods(grid, NUM_CLASSES, CHANNELS, SIZE)
    assert n >= 2 * len(METHODS)
    # and at CIFAR size with cross-architecture pairs (every method but the shape-bound FSP and AB)
    def cross(cfg):
        cfg["experiments"]["main"]["methods"] = [m for m in METHODS if m not in ("fsp", "ab")]
        cfg["experiments"]["main"]["pairs"] = [{"teacher": "vgg13", "student": "MobileNetV2"},
                                               {"teacher": "resnet32x4", "student": "ShuffleV2"}]

    assert check_methods(load(cross), 100, 3, 32) >= 2 * (len(METHODS) - 2)

    def bad(cfg):
        cfg["experiments"]["main"]["methods"] = ["fsp"]
        cfg["experiments"]["main"]["pairs"] = [{"teacher": "resnet20", "student": "MobileNetV2"}]

    with pytest.raises(ConfigError) as info:
        check_methods(load(bad), NUM_CLASSES, CHANNELS, SIZE)
    assert str(info.value).startswith("config key 'experiments.main.pairs[0]': method 'fsp' cannot distil resnet20 → "
                                      "MobileNetV2: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("crd_hp, expected", [
    ({"bnak": "full"}, "config key 'experiments.fewshot.method_hp.crd': unknown key(s) ['bnak'] for method 'crd'"),
    ({"bank": "ful"}, "config key 'experiments.fewshot.pair': method 'crd' cannot distil resnet20 → resnet8: "
                      "methods.crd.bank: 'ful' is not one of visible, full (with the overrides of "
                      "'experiments.fewshot.method_hp.crd')"),
])
def test_preflight_checks_an_experiments_own_method_hyper_parameters(load, crd_hp, expected):
    def fewshot_crd(cfg):
        cfg["experiments"]["fewshot"]["methods"] = ["kd", "crd"]
        cfg["experiments"]["fewshot"]["method_hp"] = {"crd": crd_hp}

    with pytest.raises(ConfigError) as info:
        check_methods(load(fewshot_crd), NUM_CLASSES, CHANNELS, SIZE)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)
    # the official few-shot value passes, and is checked as its own combination beside the main experiment's CRD
    assert check_methods(load(lambda c: (fewshot_crd(c), c["experiments"]["fewshot"]["method_hp"].update(
        crd={"bank": "full"}))), NUM_CLASSES, CHANNELS, SIZE) >= 2


# ----------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("method", FEATURE_METHODS)
def test_gradients_reach_student_and_heads_never_the_teacher(method):
    d = _build(method, *SAME_PAIR)
    d.train()
    x, y, idx = _batch()
    teacher_before = copy.deepcopy(d.teacher.state_dict())
    assert not d.teacher.training
    learnable = d.learnable_parameters()
    teacher_ids = {id(p) for p in d.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in learnable}
    opt = torch.optim.SGD(learnable, lr=0.1)
    init = d.init_stage()
    if init is not None:  # the init stage trains its own parameters, never the teacher's
        assert not teacher_ids & {id(p) for p in init.parameters}
        sum(init.loss(x, y).values()).backward()
        assert all(p.grad is not None for p in init.parameters)
        d.zero_grad(set_to_none=True)
    logits, terms = d.forward_train(x, y, epoch=1, indices=idx, generator=torch.Generator().manual_seed(0))
    assert logits.shape == (BATCH, NUM_CLASSES)
    sum(terms.values()).backward()
    assert all(p.grad is None for p in d.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.student.parameters())
    head_ids = {id(p) for p in d.heads.parameters()}
    for p in learnable:
        if id(p) in head_ids:
            assert p.grad is not None and p.grad.abs().sum() > 0
    opt.step()
    after = d.teacher.state_dict()
    assert all(torch.equal(teacher_before[k], after[k]) for k in after)
    # checkpoints hold everything but the teacher, and load back
    state = d.checkpoint_state()
    assert not any(k.startswith("teacher.") for k in state)
    d.load_checkpoint_state(state)


@pytest.mark.parametrize("method", FEATURE_METHODS)
def test_a_few_steps_lower_the_loss_same_and_cross_architecture(method):
    _train_and_check(method, SAME_PAIR)
    _train_and_check(method, CROSS_PAIR.get(method, DEFAULT_CROSS))


@pytest.mark.parametrize("method", ["ab", "fsp"])
def test_two_stage_methods_can_also_distil_in_the_main_stage(method):
    plain = _build(method, *SAME_PAIR)
    x, y, idx = _batch()
    assert set(plain.forward_train(x, y, epoch=1)[1]) == {"ce"}  # RepDistiller: loss_kd = 0 after the init stage
    d = _train_and_check(method, SAME_PAIR, hp={"main_stage_loss": True, "init_epochs": 0})
    assert method in d.forward_train(x, y, epoch=1)[1]


def test_ft_freezes_the_paraphraser_after_its_init_stage():
    d = _build("ft", *SAME_PAIR)
    init = d.init_stage()
    para = {id(p) for p in d.heads["paraphraser"].parameters()}
    assert {id(p) for p in init.parameters} == para
    assert init.lr == 0.01  # RepDistiller's init lr for ResNet/WRN students
    assert not para & {id(p) for p in d.learnable_parameters()}
    assert _build("ft", *DEFAULT_CROSS).init_stage().lr is None  # ShuffleV1: the student's own lr


def test_ab_and_fsp_init_train_the_feature_layers_not_the_classifier():
    for method in ("ab", "fsp"):
        d = _build(method, "wrn_16_1", "wrn_16_1") if method == "fsp" else _build(method, *SAME_PAIR)
        ids = {id(p) for p in d.init_stage().parameters}
        classifier = [n for n, p in d.student.named_parameters() if id(p) not in ids]
        assert classifier and all(n.startswith(("fc.", "bn1.")) for n in classifier), classifier


@pytest.mark.parametrize("s_shape, t_shape, kind", [
    ((16, 8, 8), (32, 4, 4), torch.nn.Conv2d),            # student twice the size: stride-2 conv
    ((16, 4, 4), (32, 8, 8), torch.nn.ConvTranspose2d),   # half the size: transposed conv
    ((16, 6, 6), (32, 4, 4), torch.nn.Conv2d),            # a bit larger: valid 3×3 conv
])
def test_fitnet_regressor_maps_the_student_map_onto_the_teacher_shape(s_shape, t_shape, kind):
    from mcmikd.distill.methods._common import ConvReg

    reg = ConvReg(s_shape, t_shape)
    assert type(reg.conv) is kind
    assert reg(torch.randn(2, *s_shape)).shape == (2, *t_shape)
    with pytest.raises(ConfigError, match="cannot regress a 2×2 student map onto a 8×8 teacher map"):
        ConvReg((16, 2, 2), (32, 8, 8))


def test_fitnet_trains_across_a_size_mismatch():
    d = _train_and_check("fitnet", ("resnet14", "MobileNetV2"))  # hint maps 8×8 (teacher) vs 4×4 (student)
    assert type(d.heads["regressor"].conv) is torch.nn.ConvTranspose2d


def test_kd_term_joins_feature_methods_when_alpha_is_set():
    d = _build("at", *SAME_PAIR, hp={"alpha": 0.9})
    x, y, _ = _batch()
    assert set(d.forward_train(x, y, epoch=1)[1]) == {"ce", "kd", "at"}


# ----------------------------------------------------------------------------------------------- per-pair tables
def test_dkd_uses_the_official_beta_per_pair_unless_configured():
    table = {("resnet56", "resnet20"): 2.0, ("resnet110", "resnet32"): 2.0, ("vgg13", "vgg8"): 6.0,
             ("wrn_40_2", "wrn_16_2"): 6.0, ("wrn_40_2", "wrn_40_1"): 6.0, ("vgg13", "MobileNetV2"): 6.0,
             ("resnet32x4", "resnet8x4"): 8.0, ("ResNet50", "MobileNetV2"): 8.0, ("resnet32x4", "ShuffleV1"): 8.0,
             ("wrn_40_2", "ShuffleV1"): 8.0, ("resnet110", "resnet20"): 8.0}
    cls = get_method("dkd")
    for (t, s), beta in table.items():
        assert cls.official_beta(t, s) == beta
        with torch.device("meta"):
            d = cls(create_model(s, 100), create_model(t, 100), {}, DistillContext(
                num_classes=100, num_train=2, train_labels=None, in_channels=3, image_size=32, epochs=1,
                student_arch=s, teacher_arch=t))
        assert d.beta == beta
    assert _build("dkd", *SAME_PAIR, hp={"beta": 3.5}).beta == 3.5
    # mdistiller's ImageNet configs (configs/imagenet/r34_r18/dkd.yaml, r50_mv1/dkd.yaml)
    assert cls.official_beta("resnet34", "resnet18") == 0.5 and cls.official_beta("resnet50", "MobileNetV1") == 2.0


def test_dkd_warms_up_linearly_over_twenty_epochs():
    d = _build("dkd", *SAME_PAIR).eval()
    x, y, _ = _batch()
    with torch.no_grad():
        first, tenth, late = (float(d.forward_train(x, y, epoch=e)[1]["dkd"]) for e in (1, 10, 30))
    assert tenth == pytest.approx(10 * first, rel=1e-4) and late == pytest.approx(2 * tenth, rel=1e-4)


def test_reviewkd_weights_and_shapes_follow_the_official_setup():
    cls = get_method("reviewkd")
    assert cls.official_weight("resnet56", "resnet20") == 0.6
    assert cls.official_weight("resnet110", "resnet32") == 1.0
    assert cls.official_weight("resnet32x4", "ShuffleV2") == 8.0
    assert cls.official_weight("resnet32x4", "resnet8x4") == 5.0
    with torch.device("meta"):
        s, t = create_model("ShuffleV1", 100), create_model("resnet32x4", 100)
        ctx = DistillContext(num_classes=100, num_train=2, train_labels=None, in_channels=3, image_size=32,
                             epochs=1, student_arch="ShuffleV1", teacher_arch="resnet32x4",
                             student_shapes=feature_shapes("ShuffleV1", 100, 3, 32),
                             teacher_shapes=feature_shapes("resnet32x4", 100, 3, 32))
        d = cls(s, t, {}, ctx)
    # the official build_review_kd table for shufflev1 ← resnet32x4: in [240,480,960,960], out [64,128,256,256]
    abfs = list(d.heads["abfs"])[::-1]
    assert [a.conv1[0].in_channels for a in abfs] == [240, 480, 960, 960]
    assert [a.conv2[0].out_channels for a in abfs] == [64, 128, 256, 256]
    assert {a.conv1[0].out_channels for a in abfs} == {512}
    assert d.out_sizes[::-1] == [(32, 32), (16, 16), (8, 8), (1, 1)] and d.weight == 5.0


# ----------------------------------------------------------------------------------------------- CRD
def test_crd_memory_bank_is_one_slot_per_training_image_and_negatives_are_capped():
    d = _build("crd", *SAME_PAIR)
    assert d.memory_s.shape == d.memory_t.shape == (N_TRAIN, 128)
    assert d.nce_k == N_TRAIN - N_TRAIN // NUM_CLASSES  # 16384 capped to the other-class images of each anchor
    labels = torch.tensor([0] * 30 + [1] * 5 + [2] * 5)
    assert _build("crd", *SAME_PAIR, labels=labels).nce_k == 10
    assert _build("crd", *SAME_PAIR, hp={"nce_k": 7}).nce_k == 7
    with torch.device("meta"):  # labels unreadable: cap at N − 1
        meta_labels = torch.arange(N_TRAIN) % NUM_CLASSES
        assert get_method("crd").negatives_allowed(16384, meta_labels) == N_TRAIN - 1
    with pytest.raises(ConfigError, match="two classes"):
        _build("crd", *SAME_PAIR, labels=torch.zeros(N_TRAIN, dtype=torch.long))
    state = d.checkpoint_state()
    assert {"memory_s", "memory_t", "z"} <= set(state) and "labels" not in state


def test_crd_step_updates_the_anchor_slots_and_fixes_z():
    d = _build("crd", *SAME_PAIR)
    d.train()
    x, y, idx = _batch()
    before = d.memory_s.clone()
    d.forward_train(x, y, epoch=1, indices=idx, generator=torch.Generator().manual_seed(0))
    changed = (d.memory_s != before).any(dim=1)
    assert changed[idx].all() and not changed[BATCH:].any()
    assert torch.allclose(d.memory_s[idx].norm(dim=1), torch.ones(BATCH), atol=1e-5)
    z = d.z.clone()
    assert (z > 0).all()
    d.forward_train(x, y, epoch=1, indices=idx, generator=torch.Generator().manual_seed(1))
    assert torch.equal(d.z, z)


# ----------------------------------------------------------------------------------------------- HSAKD
def _config_pairs() -> set[tuple[str, str]]:
    import yaml

    root = Path(__file__).parents[1] / "config"
    return {(p["teacher"], p["student"]) for name in ("cifar100.yaml", "digits-full.yaml")
            for p in yaml.safe_load((root / name).read_text())["experiments"]["main"]["pairs"]}


@pytest.mark.parametrize("size, channels", [(32, 3), (16, 1), (8, 1)])
def test_hsakd_aux_heads_fit_every_configured_architecture_at_8_16_32_px(size, channels):
    import re

    from mcmikd.distill.methods.hsakd import build_aux_heads

    # the depth of a family does not change its stage shapes: the shallowest member stands for it (faster)
    def shallowest(arch):
        return re.sub(r"^wrn_\d+_", "wrn_16_", re.sub(r"^resnet\d+", "resnet8", re.sub(r"^vgg\d+$", "vgg8", arch)))

    for arch in sorted({shallowest(a) for pair in _config_pairs() for a in pair}):
        stages = feature_shapes(arch, NUM_CLASSES, channels, size)["feats"][1:]
        with torch.device("meta"):  # one block per stage: the shapes do not depend on the depth
            heads = build_aux_heads(stages, list(range(len(stages))), 1, 4 * NUM_CLASSES)
            outs = [head(torch.empty(5, *shape)) for head, shape in zip(heads, stages)]
        assert [tuple(z.shape) for z in outs] == [(5, 4 * NUM_CLASSES)] * len(stages), (arch, size)
    if size != 8:
        return
    # real tensors where the deepest maps are 1×1 (MobileNetV2 at 8 px); stages of unequal count pair the deepest
    d = _build("hsakd", "resnet14", "MobileNetV2").train()
    assert (d.s_idx, d.t_idx) == ([1, 2, 3], [0, 1, 2])
    feats = d.student.forward_features(torch.randn(8, CHANNELS, 8, 8)).feats
    assert feats[-1].shape[2:] == (1, 1)
    assert [tuple(z.shape) for z in d.student_aux_logits(feats)] == [(8, 4 * NUM_CLASSES)] * 3


def test_hsakd_teacher_stays_frozen_and_its_heads_train_only_in_the_init_stage():
    d = _build("hsakd", *SAME_PAIR)
    d.train()
    x, y, _ = _batch()
    teacher_before = copy.deepcopy(d.teacher.state_dict())
    aux_before = copy.deepcopy(d.heads["teacher_aux"].state_dict())
    init = d.init_stage()
    assert init.epochs == 100 and init.lr == 0.05
    assert {id(p) for p in init.parameters} == {id(p) for p in d.heads["teacher_aux"].parameters()}
    _steps(d, init.parameters, lambda: init.loss(x, y), 2, lr=init.lr, momentum=0.9)
    assert not d.teacher.training and not d.heads["teacher_aux"].training
    after = d.teacher.state_dict()
    assert all(torch.equal(teacher_before[k], after[k]) for k in after)  # weights and BN statistics
    trained = d.heads["teacher_aux"].state_dict()
    assert not all(torch.equal(aux_before[k], trained[k]) for k in trained)
    trained = copy.deepcopy(trained)
    # main stage: the student and its heads learn; the teacher and its heads (eval mode, no grad) do not
    learnable = {id(p) for p in d.learnable_parameters()}
    assert not learnable & {id(p) for p in d.teacher.parameters()}
    assert not learnable & {id(p) for p in d.heads["teacher_aux"].parameters()}
    assert {id(p) for p in d.heads["student_aux"].parameters()} <= learnable
    student_before = copy.deepcopy(d.student.state_dict())
    _steps(d, d.learnable_parameters(), lambda: d.forward_train(x, y, epoch=1)[1], 2, lr=0.01)
    assert all(torch.equal(teacher_before[k], v) for k, v in d.teacher.state_dict().items())
    assert all(torch.equal(trained[k], v) for k, v in d.heads["teacher_aux"].state_dict().items())
    assert not all(torch.equal(student_before[k], v) for k, v in d.student.state_dict().items())


# ----------------------------------------------------------------------------------------------- engine
def _tiny_data():
    return random_dataset(48, SIZE)


def _fit(method, resume_path, hp, epoch_hook=None, epochs=2, seed=0, **stream_kw):
    from mcmikd.engine import Recipe, ResumeFile, Runtime, TrainStream, evaluate, fit

    runtime = Runtime(device=torch.device("cpu"), channels_last=False, precision="fp32", deterministic=True)
    data = _tiny_data()
    stream = TrainStream(data, runtime, padding=1, **stream_kw)
    torch.manual_seed(seed)
    s = create_model("resnet8", 4, 1)
    t = create_model("resnet14", 4, 1)
    ctx = DistillContext(num_classes=4, num_train=stream.num_visible, train_labels=stream.visible_labels,
                         in_channels=1, image_size=SIZE, epochs=2, student_arch="resnet8", teacher_arch="resnet14",
                         student_shapes=feature_shapes("resnet8", 4, 1, SIZE),
                         teacher_shapes=feature_shapes("resnet14", 4, 1, SIZE))
    d = get_method(method)(s, t, hp, ctx)
    recipe = Recipe(epochs=epochs, batch_size=16, lr=0.01)
    return d, fit(d, stream, recipe, runtime=runtime, seed=seed, resume=ResumeFile(resume_path, "x"),
                  evaluator=lambda: evaluate(s, data.test_images, data.test_labels, stream.normalize, runtime, 4),
                  epoch_hook=epoch_hook)


@pytest.mark.parametrize("method, init_term, main_terms", [("ab", "ab_init", {"ce"}),
                                                          ("hsakd", "teacher_aux_ce", {"ce", "kd", "kd_aux"})])
def test_two_stage_method_runs_its_init_stage_in_the_engine(method, init_term, main_terms):
    _, result = _fit(method, None, {"init_epochs": 1})
    phases = [(h["phase"], h["epoch"]) for h in result.history]
    assert phases == [("init", 1), ("main", 1), ("main", 2)]
    assert set(result.history[0]["train"]) == {init_term, "total"}
    assert set(result.history[1]["train"]) == main_terms | {"total"}


def test_crd_run_resumed_after_a_kill_ends_like_an_uninterrupted_one(tmp_path):
    full_d, full = _fit("crd", tmp_path / "a.pt", {})

    def killed(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt  # after epoch 1's checkpoint, before epoch 2's
        return None

    with pytest.raises(KeyboardInterrupt):
        _fit("crd", tmp_path / "b.pt", {}, epoch_hook=killed)
    from mcmikd.engine import ResumeFile

    saved = ResumeFile(tmp_path / "b.pt", "x").load()  # read with weights_only=True, not refused
    assert saved is not None and saved["next_epoch"] == 2 and saved["optimizer"]["state"]
    resumed_d, resumed = _fit("crd", tmp_path / "b.pt", {})
    assert [h["train"] for h in resumed.history] == [h["train"] for h in full.history]
    a, b = full_d.checkpoint_state(), resumed_d.checkpoint_state()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------- reliability
# Short runs recorded (tests/recorded/distill.json, `tests/pins.py`) with the code before the one-image-batch merge,
# the divergence stop and the one-sample guards of CC/RKD/ReviewKD (commit 7624062, torch 2.14 CPU, 1 thread):
# ordinary batches (all ≥ 2 images) must give the same losses and metrics (bit for bit on the recording machine's
# CPU kernels, within the kernel-drift tolerance elsewhere). "few": a cycled subset with an omitted class (batches
# of 10–13 images).
FEW = {"pool": torch.arange(3, 33), "epoch_length": 44, "omitted": (2,)}
PINNED_CASES = [(m, s) for m in ("cc", "crd", "kd", "reviewkd", "rkd") for s in ("few", "plain")]


def _history_fingerprint(result) -> str:
    import hashlib
    import json

    keys = ("train", "train_acc", "test_acc", "test_loss", "test_cmi")
    values = [[h["phase"], h["epoch"]] + [h.get(k) for k in keys] for h in result.history]
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:16]


def pinned(case: str, seed: int = 0) -> tuple[list[dict], str]:
    """(history, digest) of a "<method>/<setting>" run: what tests/recorded/distill.json holds."""
    method, setting = case.split("/")
    _, result = _fit(method, None, {}, seed=seed, **(FEW if setting == "few" else {}))
    assert result.stopped_early is None
    return result.history, _history_fingerprint(result)


@pytest.mark.parametrize("method, setting", PINNED_CASES)
def test_ordinary_runs_give_the_recorded_numbers(method, setting):
    import pins

    pins.check("distill", f"{method}/{setting}", *pinned(f"{method}/{setting}"))


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_has_finite_losses_and_gradients_on_two_images(method):
    hp = {"main_stage_loss": True, "init_epochs": 1} if method in ("ab", "fsp") else {}
    d = _build(method, "resnet8", "resnet8", hp=hp)
    d.train()
    x, y, idx = (t[:2] for t in _batch())
    checks = [("main", lambda: d.forward_train(x, y, epoch=3, indices=idx, generator=torch.Generator())[1],
               d.learnable_parameters())]
    init = d.init_stage()
    if init is not None:
        checks.append(("init", lambda: init.loss(x, y), init.parameters))
    for stage, loss_fn, params in checks:
        d.zero_grad(set_to_none=True)
        terms = loss_fn()
        assert terms and all(bool(torch.isfinite(v)) for v in terms.values()), (stage, terms)
        sum(terms.values()).backward()
        grads = [p.grad for p in params if p.grad is not None]
        assert grads and all(bool(torch.isfinite(g).all()) for g in grads), stage


def test_reviewkd_refuses_a_one_image_training_batch_clearly():
    d = _build("reviewkd", *SAME_PAIR).train()
    x, y, _ = _batch()
    with pytest.raises(ValueError, match="reviewkd needs at least two images per training batch, got 1"):
        d.forward_train(x[:1], y[:1], epoch=1)


def _diverging_kd(monkeypatch, term, bad_value, from_epoch):
    from mcmikd.distill.methods.kd import KD

    original = KD.forward_train

    def forward_train(self, images, targets, *, epoch, **kw):
        logits, terms = original(self, images, targets, epoch=epoch, **kw)
        if epoch >= from_epoch:
            terms[term] = terms[term] + bad_value  # the gradients stay finite: only this term is bad
        return logits, terms

    monkeypatch.setattr(KD, "forward_train", forward_train)


@pytest.mark.parametrize("term, bad_value", [("kd", float("inf")), ("ce", float("nan"))])
def test_a_diverged_loss_stops_the_run_with_a_one_line_reason(monkeypatch, tmp_path, term, bad_value):
    import json

    from mcmikd.engine import summarize
    from mcmikd.io import read_json, write_json

    _diverging_kd(monkeypatch, term, bad_value, from_epoch=2)
    hook_calls = []
    _, result = _fit("kd", None, {}, epoch_hook=lambda r: hook_calls.append(r["epoch"]), epochs=4)
    reason = result.stopped_early
    assert reason.startswith("diverged:") and "\n" not in reason
    assert reason == f"diverged: non-finite training loss ({term} = {bad_value}) in epoch 2"
    assert [h["epoch"] for h in result.history] == [1, 2] and hook_calls == [1]
    assert result.last["epoch"] == 2 and result.best["epoch"] == 1  # a diverged epoch is never the best
    path = tmp_path / "m.json"
    write_json(path, summarize(result))  # strict JSON: the non-finite losses are written as null

    def refuse(name):
        raise AssertionError(f"bare {name} in the result file")

    loaded = json.loads(path.read_text(), parse_constant=refuse)
    assert loaded["history"][1]["train"][term] is None and read_json(path)["stopped_early"] == reason


def test_a_diverged_init_stage_stops_before_the_main_phase(monkeypatch):
    from mcmikd.distill.methods.ab import AB
    from mcmikd.engine import summarize

    monkeypatch.setattr(AB, "_init_loss", lambda self, images, targets: {
        "ab_init": self._connected_loss(images)[2] + float("inf")})
    _, result = _fit("ab", None, {"init_epochs": 2})
    assert result.stopped_early == "diverged: non-finite training loss (ab_init = inf) in init epoch 1"
    assert [(h["phase"], h["epoch"]) for h in result.history] == [("init", 1)]
    assert summarize(result)["last_epoch"] == 1 and "test_acc" in result.last
