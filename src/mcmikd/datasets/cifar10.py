"""CIFAR-10: 60,000 32×32 colour images of 10 classes (50,000 train, 10,000 test), the standard python folder
`<root>/cifar-10-batches-py/`. Source: https://www.cs.toronto.edu/~kriz/cifar.html (Krizhevsky, 2009)."""

from __future__ import annotations

from mcmikd.datasets._cifar import CifarSpec


class CIFAR10(CifarSpec):
    name = "cifar10"
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    # per-channel mean/std of the training images (the values RepDistiller and the MCMI code use)
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2023, 0.1994, 0.2010)
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_file = "test_batch"
    meta_file = "batches.meta"
    label_key = "labels"
    names_key = "label_names"
    torchvision_class = "CIFAR10"
    # md5 of each file of the standard archive (published with the dataset; torchvision checks the same values)
    checksums = {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    }
