"""The bundled cluttered-numbers task (two-digit numbers, 100 classes): deterministic, both digits of a canvas from
its own split, the tens digit left of the units digit, every number equally often, boxes around both digits, and a
digit size that cannot fit refused before any job."""

import numpy as np
import pytest
import torch

from mcmikd.datasets import dataset_params, get_dataset, load_dataset, num_classes
from mcmikd.datasets.cluttered_digits import CANVAS, INK
from mcmikd.datasets.cluttered_numbers import HALF, load_cluttered_numbers
from mcmikd.errors import ConfigError
from test_cluttered_digits import _digest

SMALL = {"placements": 1, "clutter": 2, "digit_size": [10, 14], "fragment_size": 6}


@pytest.fixture(scope="module")
def data():
    return load_cluttered_numbers(**SMALL)


def test_100_classes_sizes_and_every_number_equally_often(data):
    assert num_classes({"name": "cluttered_numbers"}) == 100 and data.class_names[:3] == ["00", "01", "02"]
    assert data.train_images.shape == (1347, 1, CANVAS, CANVAS) and data.test_images.shape == (450, 1, 32, 32)
    assert data.train_images.dtype == torch.uint8 and data.in_channels == 1 and not data.hflip
    for labels in (data.train_labels, data.test_labels):
        counts = np.bincount(labels.numpy(), minlength=100)
        assert counts.max() - counts.min() <= 1  # 1,347 canvases: 13 or 14 of each number


def test_both_digits_come_from_the_canvas_split_and_the_tens_source_is_recorded(data):
    from sklearn.datasets import load_digits

    target = load_digits().target
    train, test = set(data.info["train_sources"]), set(data.info["test_sources"])
    assert not train & test  # the tens sources of the two splits are disjoint ...
    assert (target[data.info["train_sources"]] == data.train_labels.numpy() // 10).all()  # ... and are tens digits
    assert (target[data.info["test_sources"]] == data.test_labels.numpy() // 10).all()


def test_without_clutter_the_tens_ink_is_left_and_the_units_ink_right_inside_the_box():
    clean = load_cluttered_numbers(**{**SMALL, "clutter": 0})
    images, boxes = clean.test_images[:, 0], torch.tensor(clean.info["test_boxes"])
    assert ((boxes[:, :2] >= 0) & (boxes[:, 2:] <= CANVAS) & (boxes[:, 2:] > boxes[:, :2])).all()
    for image, (x0, y0, x1, y1) in zip(images[:100], boxes[:100].tolist()):
        ink = image >= 255 * INK + 1  # clear of the uint8 rounding of the threshold itself
        assert ink[:, :HALF].any() and ink[:, HALF:].any()  # one digit in each half
        inside = torch.zeros_like(ink)
        inside[y0:y1, x0:x1] = True
        assert not (ink & ~inside).any()  # the box holds all the ink of both digits ...
        edge = image >= 255 * INK - 1
        assert edge[y0].any() and edge[:, x1 - 1].any()  # ... and is tight


def test_the_same_parameters_give_the_same_bits_and_another_seed_other_images(data):
    assert _digest(load_dataset("cluttered_numbers", **SMALL)) == _digest(data)
    other = load_cluttered_numbers(**SMALL, split_seed=1)
    assert not torch.equal(other.train_images[:50], data.train_images[:50])


def test_its_keys_are_those_of_cluttered_digits():
    ds = {"name": "cluttered_numbers", "image_size": 16, "test_fraction": 0.25, "split_seed": 0, "root": "data",
          "placements": 3, "test_placements": None, "clutter": 4, "digit_size": [10, 14], "fragment_size": 6,
          "validation": None}
    assert list(dataset_params(ds)) == ["name", "test_fraction", "split_seed", "placements", "clutter", "digit_size",
                                        "fragment_size"]


def test_digits_too_large_for_half_a_canvas_are_one_line_before_any_job():
    spec = get_dataset("cluttered_numbers")
    spec.check({"name": "cluttered_numbers", "digit_size": [10, 16]})
    with pytest.raises(ConfigError, match=r"^config key 'dataset.digit_size': \[12, 18\] is too large for "
                                          r"cluttered_numbers; .* use sides ≤ 16, e.g. \[10, 14\]$"):
        spec.check({"name": "cluttered_numbers", "digit_size": [12, 18]})
    with pytest.raises(ValueError, match="digit_size"):
        load_cluttered_numbers(**{**SMALL, "digit_size": [12, 18]})
