"""scikit-learn's handwritten digits: 1,797 real 8×8 grayscale images of 10 classes, bundled (no download).

Source: `sklearn.datasets.load_digits` (the UCI optical-recognition test set). The train/test split is drawn
here (seeded, stratified) and recorded in the tensors' `info`.
"""

from __future__ import annotations

import math

from mcmikd.datasets.base import DatasetSpec

NUM_IMAGES = 1797


class Digits(DatasetSpec):
    name = "digits"
    class_names = tuple(str(i) for i in range(10))
    in_channels = 1
    hflip = False  # a mirrored 2, 3, 4, 5, 7 or 9 is not that digit
    config_keys = ("image_size", "test_fraction", "split_seed")  # mean/std: computed from the train split

    @classmethod
    def num_train(cls, ds: dict) -> int:
        return NUM_IMAGES - math.ceil(float(ds["test_fraction"]) * NUM_IMAGES)  # as train_test_split rounds

    @classmethod
    def load(cls, image_size: int = 32, test_fraction: float = 0.25, split_seed: int = 0):
        return load_digits(image_size=image_size, test_fraction=test_fraction, split_seed=split_seed)


def load_digits(image_size: int = 16, test_fraction: float = 0.25, split_seed: int = 0):
    """scikit-learn's handwritten digits (1,797 real 8×8 images, 10 classes) with a seeded stratified split.

    Pixel values 0..16 are scaled to 0..255 and the images resized bilinearly to `image_size`. Returns a
    `DatasetTensors`: uint8 images (N, 1, image_size, image_size) in the original order, int64 labels; the
    split's indices are in `info`.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    from mcmikd.data import DatasetTensors

    bunch = sk_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    indices = np.arange(len(labels))
    train_idx, test_idx = train_test_split(indices, test_size=test_fraction, random_state=split_seed,
                                           stratify=bunch.target)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    train_images = images[train_idx]
    scaled = train_images.float() / 255
    mean = (float(scaled.mean()),)
    std = (float(scaled.std()),)
    return DatasetTensors(
        name="digits",
        train_images=train_images.contiguous(), train_labels=labels[train_idx],
        test_images=images[test_idx].contiguous(), test_labels=labels[test_idx],
        mean=mean, std=std, class_names=[str(c) for c in bunch.target_names], hflip=False,
        info={"source": "sklearn.datasets.load_digits", "image_size": image_size, "test_fraction": test_fraction,
              "split_seed": split_seed, "train_indices": train_idx.tolist(), "test_indices": test_idx.tolist()},
    )
