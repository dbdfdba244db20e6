"""Datasets, the few-shot subset and omitted-class semantics, batched augmentation."""

import hashlib
import json
import pickle

import numpy as np
import pytest
import torch

from mcmikd.augment import random_crop_flip
from mcmikd.data import DatasetTensors, fewshot_subset
from mcmikd.datasets import get_dataset, load_dataset
from mcmikd.datasets.digits import load_digits
from mcmikd.engine import Runtime, TrainStream
from mcmikd.errors import ConfigError, DataError

CPU = Runtime(device=torch.device("cpu"), channels_last=False, precision="fp32", deterministic=True)


def test_digits_split_is_stratified_seeded_and_recorded():
    a, b = load_digits(16, 0.25, split_seed=0), load_digits(16, 0.25, split_seed=0)
    assert torch.equal(a.train_images, b.train_images) and a.info["test_indices"] == b.info["test_indices"]
    assert a.train_images.shape == (1347, 1, 16, 16) and a.test_images.shape == (450, 1, 16, 16)
    assert a.train_images.dtype == torch.uint8 and a.hflip is False
    test_counts = torch.bincount(a.test_labels, minlength=10).double()
    totals = test_counts + torch.bincount(a.train_labels, minlength=10)
    assert ((test_counts - 0.25 * totals).abs() <= 1).all()  # stratified: 25 % of each class
    assert set(a.info["train_indices"]).isdisjoint(a.info["test_indices"])
    c = load_digits(16, 0.25, split_seed=1)
    assert a.info["test_indices"] != c.info["test_indices"]


def _digest(data) -> str:
    h = hashlib.sha256()
    for t in (data.train_images, data.train_labels, data.test_images, data.test_labels):
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes())
    h.update(json.dumps([data.name, list(data.mean), list(data.std), data.class_names, data.hflip, data.info],
                        sort_keys=True).encode())
    return h.hexdigest()


@pytest.mark.parametrize("size, digest", [  # computed with the loader before datasets became plug-ins
    (8, "38b1e2188f9f98ee63660f5599d3e5d5c5ecc782256ccc5df574b7c60c71a5f8"),
    (16, "63f4803202399812b6e21430720c688c228ef26f8b595e8df9f063ece18526a7"),
])
def test_digits_tensors_are_bit_identical_to_the_committed_results(size, digest):
    # the default run's committed results (docs/results) were trained on exactly these tensors
    assert _digest(load_dataset("digits", image_size=size, test_fraction=0.25, split_seed=0)) == digest


def test_prepared_dataset_round_trips(tmp_path):
    data = load_digits(8)
    data.to_file(tmp_path / "d.pt")
    back = DatasetTensors.from_file(tmp_path / "d.pt")
    assert torch.equal(back.train_images, data.train_images) and back.class_names == data.class_names


def test_first_n_subset_is_file_order_and_stratified_subset_covers_each_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    assert fewshot_subset(labels, 0.3, "first_n").tolist() == [0, 1, 2]
    strat = fewshot_subset(labels, 0.5, "stratified", seed=3)
    assert sorted(labels[strat].tolist()) == [0, 0, 1, 1, 2]
    assert torch.equal(strat, fewshot_subset(labels, 0.5, "stratified", seed=3))
    assert len(fewshot_subset(labels, 0.3, "first_n")) == 3  # one image per class is the least it keeps
    with pytest.raises(ConfigError, match="keeps 2 of 10 training images, fewer than the 3 classes"):
        fewshot_subset(labels, 0.2, "first_n")
    assert sorted(labels[fewshot_subset(labels, 0.01, "stratified")].tolist()) == [0, 1, 2]  # one of each


def _digits_stream(**kw):
    data = load_digits(8)
    return data, TrainStream(data, CPU, **kw)


def test_few_shot_epoch_keeps_the_full_length_and_only_revisits_the_subset():
    data = load_digits(8)
    pool = fewshot_subset(data.train_labels, 0.1)
    stream = TrainStream(data, CPU, pool=pool, epoch_length=len(data.train_labels))
    gen = torch.Generator().manual_seed(0)
    order = stream.order(gen)
    assert len(order) == len(data.train_labels)
    assert set(order.tolist()) == set(pool.tolist())
    counts = torch.bincount(order, minlength=len(data.train_labels))[pool]
    n, total = len(pool), len(data.train_labels)
    assert counts.min() == total // n and counts.max() == -(-total // n)  # ≈ 1/fraction visits per epoch


def test_omitted_classes_never_reach_a_batch():
    data, stream = _digits_stream(omitted=(3, 8), padding=1)
    gen = torch.Generator().manual_seed(0)
    seen = torch.cat([labels for _, labels, _ in stream.batches(gen, 64)])
    assert not torch.isin(seen, torch.tensor([3, 8])).any()
    assert len(seen) == int((~torch.isin(data.train_labels, torch.tensor([3, 8]))).sum())
    assert stream.num_visible == len(seen)
    positions = torch.cat([p for _, _, p in stream.batches(gen, 64)])
    assert sorted(positions.tolist()) == list(range(stream.num_visible))  # compact memory-bank positions


def test_random_crop_matches_zero_padded_crop_and_flip_is_horizontal():
    images = torch.arange(1, 2 * 3 * 5 * 5 + 1, dtype=torch.int32).reshape(2, 3, 5, 5).to(torch.uint8)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    out = random_crop_flip(images, 2, False, gen)
    gen.set_state(state)
    offsets = torch.randint(0, 5, (2, 2), generator=gen)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for b in range(2):
        dy, dx = offsets[0, b], offsets[1, b]
        assert torch.equal(out[b], padded[b, :, dy:dy + 5, dx:dx + 5])
    flipped = random_crop_flip(images, 0, True, torch.Generator().manual_seed(1))
    for b in range(2):
        assert torch.equal(flipped[b], images[b]) or torch.equal(flipped[b], images[b].flip(-1))


# ----------------------------------------------------------------------------------------------- CIFAR
def _write_cifar10(root, per_batch=4):
    folder = root / get_dataset("cifar10").folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, per_batch)], "batch_label": name}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_vis": 3072}, handle)
    return folder


def _write_cifar100(root, n=6):
    folder = root / get_dataset("cifar100").folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("train", "test"):
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "fine_labels": [int(v) for v in rng.integers(0, 100, n)],
                         "coarse_labels": [0] * n}, handle)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []}, handle)
    return folder


def test_tiny_cifar10_folder_reads_through_the_real_loader(tmp_path):
    folder = _write_cifar10(tmp_path)
    data = load_dataset("cifar10", root=str(tmp_path), verify_checksums=False)
    assert data.train_images.shape == (20, 3, 32, 32) and data.test_images.shape == (4, 3, 32, 32)
    assert data.class_names[9] == "truck" and data.hflip
    with open(folder / "data_batch_2", "rb") as handle:
        raw = pickle.load(handle)
    # file order is kept: batch 2 starts at image 4; channels are the standard R, G, B planes
    assert np.array_equal(data.train_images[4].numpy().reshape(3072), raw["data"][0])
    assert data.train_labels[4].item() == raw["labels"][0]


def test_tiny_cifar100_folder_reads_fine_labels(tmp_path):
    _write_cifar100(tmp_path)
    data = load_dataset("cifar100", root=str(tmp_path), verify_checksums=False)
    assert data.num_classes == 100 and data.train_images.shape == (6, 3, 32, 32)


def test_missing_folder_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"cifar-100-python not found; .*dataset.download: true"):
        load_dataset("cifar100", root=str(tmp_path))


def test_checksum_mismatch_and_corrupt_file_are_reported(tmp_path):
    folder = _write_cifar10(tmp_path)
    with pytest.raises(DataError, match="md5 mismatch"):
        load_dataset("cifar10", root=str(tmp_path), verify_checksums=True)
    (folder / "data_batch_3").write_bytes(b"\x80\x04 not a pickle")
    with pytest.raises(DataError, match=r"corrupt CIFAR file .*data_batch_3"):
        load_dataset("cifar10", root=str(tmp_path), verify_checksums=False)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match=r"missing CIFAR file .*test_batch"):
        load_dataset("cifar10", root=str(tmp_path), verify_checksums=False)


def test_wrong_array_shape_is_reported(tmp_path):
    folder = _write_cifar10(tmp_path)
    with open(folder / "data_batch_1", "wb") as handle:
        pickle.dump({"data": np.zeros((4, 100), dtype=np.uint8), "labels": [0] * 4}, handle)
    with pytest.raises(DataError, match="not an N×3072 uint8 array"):
        load_dataset("cifar10", root=str(tmp_path), verify_checksums=False)
