"""The model zoo: RepDistiller's CIFAR models under their exact names, and the ImageNet models of the KD
literature's ImageNet pairs (ResNet-34 → ResNet-18, ResNet-50 → MobileNet-V1).

`CIFAR_MODELS` are RepDistiller's (github.com/HobbitLong/RepDistiller, `models/__init__.py`'s `model_dict`
names). `IMAGENET_MODELS` are torchvision's ResNets under torchvision's names (`resnet18`, `resnet34`,
`resnet50`: torchvision's own modules, `mcmikd.models.imagenet_resnet`) and mdistiller's `MobileNetV1`
(github.com/megvii-research/mdistiller, `mdistiller/models/imagenet`; `mcmikd.models.mobilenetv1`). No name is in
both: the CIFAR zoo's bottleneck ResNet is `ResNet50` (capital R, RepDistiller's), the ImageNet one `resnet50`
(torchvision's); the CIFAR ResNets are resnet8..resnet110 and resnet8x4/resnet32x4, none of 18, 34 or 50 layers.
`MODELS` is both (config names, Snakemake wildcards, results folders).

`MODELS` maps each name to "module:factory" so that the names can be listed (config validation at
Snakefile parse time) without importing torch. `create_model` imports the factory on demand.

Every model is a `ClassifierNet`: `model(x)` returns logits only (so CAM and evaluation tools work), and
`model.forward_features(x)` returns a `Features` record (stage maps after/before their last ReLU, the pooled
embedding and the logits).
"""

from __future__ import annotations

import importlib

CIFAR_MODELS: dict[str, str] = {
    "resnet8": "mcmikd.models.resnet:resnet8",
    "resnet14": "mcmikd.models.resnet:resnet14",
    "resnet20": "mcmikd.models.resnet:resnet20",
    "resnet32": "mcmikd.models.resnet:resnet32",
    "resnet44": "mcmikd.models.resnet:resnet44",
    "resnet56": "mcmikd.models.resnet:resnet56",
    "resnet110": "mcmikd.models.resnet:resnet110",
    "resnet8x4": "mcmikd.models.resnet:resnet8x4",
    "resnet32x4": "mcmikd.models.resnet:resnet32x4",
    "wrn_16_1": "mcmikd.models.wrn:wrn_16_1",
    "wrn_16_2": "mcmikd.models.wrn:wrn_16_2",
    "wrn_40_1": "mcmikd.models.wrn:wrn_40_1",
    "wrn_40_2": "mcmikd.models.wrn:wrn_40_2",
    "vgg8": "mcmikd.models.vgg:vgg8",
    "vgg11": "mcmikd.models.vgg:vgg11",
    "vgg13": "mcmikd.models.vgg:vgg13",
    "vgg16": "mcmikd.models.vgg:vgg16",
    "vgg19": "mcmikd.models.vgg:vgg19",
    "MobileNetV2": "mcmikd.models.mobilenetv2:mobilenetv2",
    "ShuffleV1": "mcmikd.models.shufflenetv1:shufflev1",
    "ShuffleV2": "mcmikd.models.shufflenetv2:shufflev2",
    "ResNet50": "mcmikd.models.resnetv2:resnet50",
}

IMAGENET_MODELS: dict[str, str] = {
    "resnet18": "mcmikd.models.imagenet_resnet:resnet18",  # torchvision
    "resnet34": "mcmikd.models.imagenet_resnet:resnet34",  # torchvision
    "resnet50": "mcmikd.models.imagenet_resnet:resnet50",  # torchvision (the CIFAR zoo's is "ResNet50")
    "MobileNetV1": "mcmikd.models.mobilenetv1:mobilenetv1",  # mdistiller / CRD's ImageNet MobileNet-V1
}

MODELS: dict[str, str] = {**CIFAR_MODELS, **IMAGENET_MODELS}

# Students with these architectures use the smaller learning rate in RepDistiller and the MCMI code. MobileNetV1 is
# not among them: mdistiller's and CRD's ImageNet recipes train it with the ResNets' learning rate.
SMALL_LR_MODELS = frozenset({"MobileNetV2", "ShuffleV1", "ShuffleV2"})


def model_names() -> list[str]:
    return list(MODELS)


def model_source_files(name: str) -> tuple[str, ...]:
    """Package files whose code defines architecture `name`: its module's static import closure (used as
    Snakemake inputs so edits rerun jobs), relative to the working directory."""
    from pathlib import Path

    from mcmikd.codedeps import code_inputs, registry_module

    return tuple(code_inputs(registry_module(MODELS[name]), base=Path(__file__).parents[2]))


def create_model(name: str, num_classes: int, in_channels: int = 3):
    """Build model `name` (RepDistiller's architecture; torchvision's or mdistiller's for `IMAGENET_MODELS`) for
    `num_classes` classes and `in_channels` inputs."""
    if name not in MODELS:
        from mcmikd.errors import ConfigError

        known = ", ".join(MODELS)
        raise ConfigError(f"unknown model '{name}'; choose one of: {known}")
    module, factory = MODELS[name].split(":")
    model = getattr(importlib.import_module(module), factory)(num_classes=num_classes, in_channels=in_channels)
    model.arch = name
    return model


def feature_shapes(name: str, num_classes: int, in_channels: int, image_size: int) -> dict:
    """Shapes of `forward_features` outputs for one image, computed on the meta device (no arithmetic).

    Returns {"feats": [(C, H, W), ...], "preact_feats": [...], "pooled": D, "logits": num_classes}.
    """
    import torch

    with torch.device("meta"):
        model = create_model(name, num_classes, in_channels).eval()
        out = model.forward_features(torch.empty(2, in_channels, image_size, image_size))
    return {
        "feats": [tuple(f.shape[1:]) for f in out.feats],
        "preact_feats": [tuple(f.shape[1:]) for f in out.preact_feats],
        "pooled": int(out.pooled.shape[1]),
        "logits": int(out.logits.shape[1]),
    }
