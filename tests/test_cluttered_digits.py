"""The bundled cluttered-digits task (issue 18): deterministic, split by source image, boxes on the canvas; and the
`last_batch: merge` option that keeps a few-image last batch from being a step of its own."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mcmikd.data import DatasetTensors
from mcmikd.datasets import dataset_params, hold_out_validation, load_dataset
from mcmikd.datasets.cluttered_digits import CANVAS, INK, load_cluttered_digits, upscale
from mcmikd.engine import Runtime, TrainStream, make_generator, merge_short_last

SMALL = {"placements": 2, "clutter": 3, "digit_size": [12, 16], "fragment_size": 6}


@pytest.fixture(scope="module")
def data():
    return load_cluttered_digits(**SMALL)


def _digest(d) -> str:
    h = hashlib.sha256()
    for t in (d.train_images, d.train_labels, d.test_images, d.test_labels):
        h.update(t.numpy().tobytes())
    h.update(repr((d.info["train_boxes"], d.info["test_boxes"], d.mean, d.std)).encode())
    return h.hexdigest()


def test_sizes_labels_and_the_split_by_source(data):
    from sklearn.datasets import load_digits

    target = load_digits().target
    assert data.train_images.shape == (1347 * 2, 1, CANVAS, CANVAS) and data.test_images.shape == (450 * 2, 1, 32, 32)
    assert data.train_images.dtype == torch.uint8 and data.in_channels == 1 and not data.hflip
    train, test = set(data.info["train_sources"]), set(data.info["test_sources"])
    assert not train & test and len(train | test) == 1797  # no source digit on both sides, every one used
    assert all(data.info["test_sources"].count(s) == 2 for s in list(test)[:50])  # `placements` canvases each
    assert torch.equal(data.train_labels, torch.as_tensor(target[data.info["train_sources"]]))
    assert torch.equal(data.test_labels, torch.as_tensor(target[data.info["test_sources"]]))


def test_every_box_is_on_the_canvas_and_holds_the_digit(data):
    for split in ("train", "test"):
        boxes = torch.tensor(data.info[f"{split}_boxes"])
        images = getattr(data, f"{split}_images")[:, 0]
        assert ((boxes[:, :2] >= 0) & (boxes[:, 2:] <= CANVAS) & (boxes[:, 2:] > boxes[:, :2])).all()
        sides = boxes[:, 2:] - boxes[:, :2]
        assert sides.min() >= 4 and sides.max() <= 16  # a digit upscaled to 12..16 px
        for image, (x0, y0, x1, y1) in list(zip(images, boxes.tolist()))[:200]:
            inside = image[y0:y1, x0:x1]
            assert inside.max() >= 255 * INK  # the digit's ink is in its box ...
            assert (inside[0] >= 255 * INK).any() and (inside[:, -1] >= 255 * INK).any()  # ... and the box is tight
    clutter_free = load_cluttered_digits(**{**SMALL, "clutter": 0, "placements": 1})
    outside = clutter_free.test_images[:, 0].clone()
    for k, (x0, y0, x1, y1) in enumerate(clutter_free.info["test_boxes"]):
        outside[k, y0:y1, x0:x1] = 0
    assert outside.max() <= round(255 * INK)  # without clutter only the faint fringe (< INK before rounding) is outside


def test_the_same_parameters_give_the_same_bits_and_another_seed_other_images(data):
    again = load_cluttered_digits(**SMALL)
    assert _digest(again) == _digest(data)
    other = load_cluttered_digits(**SMALL, split_seed=1)
    assert not torch.equal(other.test_images, data.test_images)
    assert not torch.equal(load_cluttered_digits(**{**SMALL, "clutter": 4}).train_images, data.train_images)


def test_the_images_do_not_depend_on_the_cpus_vector_instructions(data):
    # numpy dispatches its loops by CPU feature; the construction must not care (float64 elementwise, exact sums)
    code = ("import hashlib, sys; sys.path.insert(0, 'tests'); from test_cluttered_digits import SMALL, _digest; "
            "from mcmikd.datasets.cluttered_digits import load_cluttered_digits as f; print(_digest(f(**SMALL)))")
    from numpy._core._multiarray_umath import __cpu_features__ as features

    off = " ".join(k for k in ("AVX512F", "AVX512_SKX", "AVX2", "FMA3", "AVX", "F16C") if features.get(k))
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": off, "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest(data)


def test_more_test_placements_add_test_canvases_and_leave_the_training_set_alone(data):
    more = load_cluttered_digits(**SMALL, test_placements=3)
    assert torch.equal(more.train_images, data.train_images) and more.info["train_boxes"] == data.info["train_boxes"]
    assert len(more.test_labels) == 450 * 3 and set(more.info["test_sources"]) == set(data.info["test_sources"])
    assert more.mean == data.mean and more.std == data.std


def test_upscale_is_torchs_bilinear_resize():
    image = np.random.default_rng(0).random((8, 8))
    expected = torch.nn.functional.interpolate(torch.from_numpy(image)[None, None], size=(13, 13), mode="bilinear",
                                               align_corners=False)[0, 0].numpy()
    assert np.allclose(upscale(image, 13), expected, atol=1e-12)


def test_a_validation_split_keeps_each_source_on_one_side(data):
    import math

    held = hold_out_validation(data, 0.2, seed=0)
    train, val = set(held.info["train_sources"]), set(held.info["test_sources"])
    assert not train & val and train | val == set(data.info["train_sources"])
    label_of = dict(zip(data.info["train_sources"], data.train_labels.tolist()))
    for c in range(10):  # stratified over sources: ⌈0.2·(sources of class c)⌉ of them held out
        n = sum(1 for s in set(data.info["train_sources"]) if label_of[s] == c)
        assert sum(1 for s in val if label_of[s] == c) == math.ceil(0.2 * n)
    assert len(held.test_labels) + len(held.train_labels) == len(data.train_labels)
    assert (len(held.info["test_boxes"]) == len(held.test_labels)
            and len(held.info["train_boxes"]) == len(held.train_labels))
    for k in (0, 17, len(held.test_labels) - 1):  # boxes follow their images
        pos = held.info["validation_positions"][k]
        assert held.info["test_boxes"][k] == data.info["train_boxes"][pos]
        assert torch.equal(held.test_images[k], data.train_images[pos])


def test_the_dataset_uses_only_its_own_config_keys():
    ds = {"name": "cluttered_digits", "image_size": 16, "test_fraction": 0.25, "split_seed": 0, "root": "data",
          "placements": 3, "test_placements": None, "clutter": 4, "digit_size": [12, 18], "fragment_size": 6,
          "validation": None}
    assert list(dataset_params(ds)) == ["name", "test_fraction", "split_seed", "placements", "clutter", "digit_size",
                                        "fragment_size"]  # config order; test_placements only when set
    assert "test_placements" in dataset_params({**ds, "test_placements": 4})
    assert list(dataset_params({**ds, "name": "digits"})) == ["name", "image_size", "test_fraction", "split_seed"]


@pytest.mark.parametrize("bad, message", [
    ({"digit_size": [20, 12]}, "digit_size"), ({"digit_size": [4, 12]}, "digit_size"),
    ({"fragment_size": 1}, "fragment_size"), ({"placements": 0}, "placements"),
])
def test_bad_construction_parameters_are_one_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("cluttered_digits", **{**SMALL, **bad})


# ------------------------------------------------------------------------------------- last_batch: merge
CPU = Runtime(device=torch.device("cpu"), channels_last=False, precision="fp32", deterministic=True)


def _stream(n, **kw):
    labels = torch.arange(n) % 10
    images = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    d = DatasetTensors(name="t", train_images=images, train_labels=labels, test_images=images[:2],
                       test_labels=labels[:2], mean=(0.5,), std=(0.25,), class_names=list("abcdefghij"), hflip=False)
    return TrainStream(d, CPU, **kw)


def _sizes(stream, batch_size, last_batch, seed=0):
    gen = make_generator(seed, CPU.device)
    return [len(labels) for _, labels, _ in stream.batches(gen, batch_size, last_batch)]


def test_merge_joins_a_few_image_last_batch_to_the_one_before():
    stream = _stream(1347)  # the digits training split at batch 64: 21 × 64 + 3
    assert _sizes(stream, 64, "keep") == [64] * 21 + [3]
    assert _sizes(stream, 64, "merge") == [64] * 20 + [67]
    assert _sizes(_stream(1312), 64, "merge") == [64] * 20 + [32]  # half a batch or more stays a step of its own
    assert _sizes(_stream(128), 64, "merge") == [64, 64]


def test_merge_serves_the_same_images_and_draws_the_same_random_numbers():
    stream = _stream(1347)
    served = {}
    for mode in ("keep", "merge"):
        gen = make_generator(3, CPU.device)
        served[mode] = [torch.cat([p for _, _, p in stream.batches(gen, 64, mode)]) for _ in range(2)]
        served[mode].append(gen.get_state())
    assert all(torch.equal(a, b) for a, b in zip(served["keep"], served["merge"]))


def test_merge_leaves_a_short_batch_that_is_not_last_alone():
    chunks = [(torch.arange(5),), (torch.arange(2),), (torch.arange(6),)]
    assert [sum(map(len, b)) for b in merge_short_last(iter(chunks), 6)] == [5, 2, 6]
    assert [sum(map(len, b)) for b in merge_short_last(iter(chunks[:2]), 6)] == [7]
    assert list(merge_short_last(iter([]), 6)) == []
    with pytest.raises(ValueError, match="last_batch"):
        _sizes(_stream(100), 64, "drop")


def test_last_batch_keep_is_left_out_of_the_job_params_so_existing_results_stand(load):
    def merge(cfg):
        cfg["teachers"]["training"]["last_batch"] = "merge"
        cfg["students"]["training"]["last_batch"] = "merge"

    kept, merged = load(), load(merge)
    assert "last_batch" not in kept.teacher_params("resnet20", "mll", 0)["recipe"]
    assert "last_batch" not in kept.student_params(kept.all_runs()[0])["recipe"]
    assert merged.teacher_params("resnet20", "mll", 0)["recipe"]["last_batch"] == "merge"
    assert merged.student_params(merged.all_runs()[0])["recipe"]["last_batch"] == "merge"
