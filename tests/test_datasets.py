"""Dataset plug-ins: the registry, image folders (bit depths, PIL modes, folder rules), safe CIFAR pickles."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from mcmikd.checks import dataset_shape
from mcmikd.datasets import (
    DATASETS,
    class_names,
    dataset_params,
    dataset_source_files,
    get_dataset,
    load_dataset,
    num_classes,
)
from mcmikd.datasets._cifar import safe_unpickle
from mcmikd.datasets.imagefolder import load_image, load_image_folder
from mcmikd.errors import ConfigError, DataError


# ----------------------------------------------------------------------------------------------- registry
def test_registry_and_specs_read_without_torch_or_numpy():
    code = ("import sys; from mcmikd.datasets import DATASETS, get_dataset, class_names, dataset_params; "
            "[get_dataset(n) for n in DATASETS]; class_names({'name': 'cifar100'}); "
            "dataset_params({'name': 'digits', 'image_size': 8, 'test_fraction': 0.25, 'split_seed': 0}); "
            "bad = [m for m in ('torch', 'numpy', 'PIL') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_unknown_dataset_is_one_line_listing_the_known_ones():
    with pytest.raises(ConfigError, match=r"^unknown dataset 'mnist'; choose one of: digits, cluttered_digits, "
                                          r"cluttered_numbers, cifar10, cifar100, imagefolder, imagenet$"):
        get_dataset("mnist")
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")


def test_specs_declare_classes_channels_flips_and_stats():
    digits, c10, c100 = (get_dataset(n) for n in ("digits", "cifar10", "cifar100"))
    assert class_names({"name": "digits"}) == [str(i) for i in range(10)]
    assert digits.in_channels == 1 and digits.hflip is False and digits.mean is None
    assert class_names({"name": "cifar10"})[0] == "airplane" and class_names({"name": "cifar10"})[9] == "truck"
    names = class_names({"name": "cifar100"})
    assert len(names) == len(set(names)) == 100 and names == sorted(names)  # the archive's order is alphabetical
    assert names[:5] == ["apple", "aquarium_fish", "baby", "bear", "beaver"] and names[-1] == "worm"
    assert names[58] == "pickup_truck" and names[89] == "tractor"
    assert c10.hflip and c100.in_channels == 3 and c100.mean == (0.5071, 0.4867, 0.4408)
    assert c10.checksums["test_batch"] == "40351d587109b95175f43aff81a1287e" and set(c100.checksums) == {
        "train", "test", "meta"}
    assert class_names({"name": "imagefolder", "root": "/nonexistent"}) is None
    assert num_classes({"name": "cifar100"}) == 100
    assert set(DATASETS) == {"digits", "cluttered_digits", "cluttered_numbers", "cifar10", "cifar100", "imagefolder",
                             "imagenet"}


def test_each_dataset_keeps_only_the_config_keys_it_uses():
    ds = {"name": "?", "image_size": 16, "test_fraction": 0.2, "split_seed": 3, "root": "data", "download": False,
          "verify_checksums": True}
    expected = {  # the keys the if-chain of Grid.data_params kept before the registry
        "digits": ["name", "image_size", "test_fraction", "split_seed"],
        "cifar10": ["name", "root", "download", "verify_checksums"],
        "cifar100": ["name", "root", "download", "verify_checksums"],
        "imagefolder": ["name", "image_size", "root"],
        "imagenet": ["name", "root"],
    }
    for name, keys in expected.items():
        assert list(dataset_params({**ds, "name": name})) == keys


def test_source_files_name_the_shared_and_own_modules():
    files = [os.path.basename(f) for f in dataset_source_files("cifar100")]
    assert files == ["data.py", "base.py", "_cifar.py", "cifar100.py"]
    assert "_cifar.py" not in [os.path.basename(f) for f in dataset_source_files("digits")]


def test_dataset_shape_without_loading(tmp_path):
    assert dataset_shape({"dataset": {"name": "digits", "image_size": 16}, "experiments": {}}) == (10, 1, 16)
    ds = {"name": "cifar100", "root": str(tmp_path), "download": True, "image_size": 64}
    assert dataset_shape({"dataset": ds, "experiments": {}}) == (100, 3, 32)  # CIFAR is always 32
    with pytest.raises(DataError, match="cifar-100-python not found; .*dataset.download: true"):
        dataset_shape({"dataset": {**ds, "download": False}, "experiments": {}})


# ----------------------------------------------------------------------------------------------- image folders
def _save(path, img, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def _pixels(path, size=2):
    """The decoded image as (size, size, 3) uint8, at its native size (PIL's resize to the same size is a copy)."""
    return load_image(path, size).transpose(1, 2, 0)


def test_16_bit_grayscale_is_scaled_by_its_true_maximum_not_clipped(tmp_path):
    ramp8 = np.array([[6, 27, 50, 71], [100, 150, 200, 255], [0, 1, 2, 3], [128, 64, 32, 16]], dtype=np.uint16)
    for mode, suffix in (("<u2", "png"), (">u2", "tif")):  # I;16 (PNG) and I;16B (big-endian TIFF)
        img = Image.fromarray((ramp8 * 257).astype(mode))
        path = _save(tmp_path / f"ramp.{suffix}", img)
        with Image.open(path) as opened:
            assert opened.mode == ("I;16" if mode == "<u2" else "I;16B")
        out = _pixels(path, 4)
        assert np.array_equal(out[..., 0], ramp8) and np.array_equal(out[..., 2], ramp8)
    near = _save(tmp_path / "near.png", Image.fromarray(np.array([[1600, 1542], [0, 65535]], dtype=np.uint16)))
    assert _pixels(near)[..., 0].tolist() == [[6, 6], [0, 255]]  # round(v / 257)


def test_32_bit_integer_images_use_the_full_32_bit_range(tmp_path):
    values8 = np.array([[0, 6], [50, 127]], dtype=np.int64)
    path = _save(tmp_path / "i32.tif", Image.fromarray((values8 * 16843009).astype(np.int32)))
    with Image.open(path) as opened:
        assert opened.mode == "I"
    assert np.array_equal(_pixels(path)[..., 1], values8)
    negative = _save(tmp_path / "neg.tif", Image.fromarray(np.array([[-5, 0], [1, 2]], dtype=np.int32)))
    with pytest.raises(DataError, match=r"^image .*neg.tif \(mode I, 32-bit signed\) has negative values"):
        _pixels(negative)


def test_float_images_in_0_1_are_read_and_others_refused(tmp_path):
    path = _save(tmp_path / "f.tif", Image.fromarray(np.array([[0.0, 0.5], [0.25, 1.0]], dtype=np.float32)))
    assert _pixels(path)[..., 0].tolist() == [[0, 128], [64, 255]]
    bad = _save(tmp_path / "fbad.tif", Image.fromarray(np.array([[0.0, 3.0], [0.5, 1.0]], dtype=np.float32)))
    with pytest.raises(DataError, match=r"fbad.tif is a float image \(mode F\) with values outside \[0, 1\]"):
        _pixels(bad)


def test_eight_bit_modes_decode_to_the_right_rgb(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    assert np.array_equal(_pixels(_save(tmp_path / "rgb.png", Image.fromarray(rgb))), rgb)
    gray = np.array([[0, 77], [200, 255]], dtype=np.uint8)
    assert np.array_equal(_pixels(_save(tmp_path / "l.png", Image.fromarray(gray))), np.stack([gray] * 3, -1))
    bits = _save(tmp_path / "one.png", Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1"))
    assert _pixels(bits)[..., 0].tolist() == [[0, 255], [255, 0]]
    pal = Image.new("P", (2, 2))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    pal.putpixel((1, 0), 1)
    pal.putpixel((0, 1), 2)
    assert _pixels(_save(tmp_path / "p.png", pal)).tolist() == [[[0, 0, 0], [255, 0, 0]], [[0, 255, 0], [0, 0, 0]]]
    cmyk = _save(tmp_path / "cmyk.tif", Image.new("CMYK", (2, 2), (255, 0, 0, 0)))
    assert _pixels(cmyk)[0, 0].tolist() == [0, 255, 255]  # pure cyan
    ycc = _save(tmp_path / "ycc.tif", Image.new("YCbCr", (2, 2), (128, 128, 128)))
    with Image.open(ycc) as opened:
        assert opened.mode == "YCbCr"
    assert _pixels(ycc)[0, 0].tolist() == [128, 128, 128]  # neutral chroma: grey


def test_alpha_is_composited_on_black(tmp_path):
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0]], [[200, 100, 50, 128], [0, 0, 0, 0]]], dtype=np.uint8)
    out = _pixels(_save(tmp_path / "rgba.png", Image.fromarray(rgba, "RGBA")))
    assert out[0, 0].tolist() == [200, 100, 50] and out[0, 1].tolist() == [0, 0, 0]
    assert np.abs(out[1, 0].astype(int) - [100, 50, 25]).max() <= 1  # half transparent: half the colour
    la = _save(tmp_path / "la.png", Image.new("LA", (2, 2), (200, 0)))
    assert _pixels(la).max() == 0
    pal = Image.new("P", (2, 2))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    pal.putpixel((0, 0), 2)
    pal.putpixel((1, 0), 1)
    out = _pixels(_save(tmp_path / "pt.png", pal, transparency=2))  # palette entry 2 (green) is transparent
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [255, 0, 0]


def test_unreadable_mode_and_corrupt_image_are_one_line(tmp_path):
    lab = _save(tmp_path / "lab.tif", Image.new("LAB", (2, 2), (50, 0, 0)))
    with pytest.raises(DataError, match=r"^image .*lab.tif has PIL mode LAB, which mcmikd cannot decode; save it"):
        _pixels(lab)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"^corrupt image .*broken.png \(UnidentifiedImageError\); remove"):
        _pixels(broken)


def _folder(root, layout, size=4):
    """layout: {split: {class: number of images}}; 16-bit PNGs of a constant value per class."""
    for split, classes in layout.items():
        for c, (cls, n) in enumerate(classes.items()):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                value = np.full((size, size), (40 * c + i) * 257, dtype=np.uint16)
                Image.fromarray(value).save(root / split / cls / f"{i}.png")
    return root


def test_image_folder_loads_16_bit_classes_in_order(tmp_path):
    root = _folder(tmp_path, {"train": {"cat": 2, "dog": 3}, "val": {"cat": 1, "dog": 1}})
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    data = load_dataset("imagefolder", root=str(root), image_size=4, split_seed=7)  # split_seed: not used here
    assert data.class_names == ["cat", "dog"] and data.train_labels.tolist() == [0, 0, 1, 1, 1]
    assert data.train_images.shape == (5, 3, 4, 4) and data.test_images.shape == (2, 3, 4, 4)
    assert data.train_images[:, 0, 0, 0].tolist() == [0, 1, 40, 41, 42]  # 16-bit values / 257, not clipped
    assert data.test_labels.tolist() == [0, 1] and data.hflip
    assert torch.allclose(torch.tensor(data.mean), torch.tensor([24.8 / 255] * 3), atol=1e-6)
    assert class_names({"name": "imagefolder", "root": str(root)}) == ["cat", "dog"]


@pytest.mark.parametrize("layout, message", [
    ({"train": {"cat": 1, "dog": 0}, "val": {"cat": 1, "dog": 1}}, r"class folder .*train/dog is empty"),
    ({"train": {"cat": 1, "dog": 1}, "val": {"cat": 1, "dog": 0}}, r"class folder .*val/dog is empty"),
    ({"train": {"cat": 1, "dog": 1}, "val": {"cat": 1}}, r"class folder .*val/dog is missing"),
    ({"train": {"cat": 1}, "val": {"cat": 1, "cow": 1}}, r"class folder\(s\) \['cow'\] in .*val have no counterpart"),
    ({"train": {"cat": 1}}, r"image folder .*val not found"),
    ({"val": {"cat": 1}}, r"image folder .*train not found"),
])
def test_image_folder_rules_are_checked_before_any_job_and_when_loading(tmp_path, layout, message):
    root = _folder(tmp_path, layout)
    config = {"dataset": {"name": "imagefolder", "root": str(root), "image_size": 4}, "experiments": {}}
    with pytest.raises(DataError, match=message):
        dataset_shape(config)
    with pytest.raises(DataError, match=message):
        load_image_folder(root, 4)


def test_image_folder_class_ids_are_checked_once_the_folder_exists(tmp_path, load):
    root = _folder(tmp_path / "imgs", {"train": {"a": 1, "b": 1, "c": 1}, "val": {"a": 1, "b": 1, "c": 1}})

    def to_folder(cfg):
        cfg["dataset"].update(name="imagefolder", root=str(root))
        cfg["experiments"]["fewshot"]["enabled"] = False  # 3 training images hold no few-shot subset

    grid_config = load(lambda c: (to_folder(c), c["experiments"]["zeroshot"].update(omitted=[[1]]))).config
    assert dataset_shape(grid_config) == (3, 3, grid_config["dataset"]["image_size"])
    with pytest.raises(ConfigError, match=r"experiments.zeroshot.omitted\[0\]': class ids \[3\] do not exist "
                                          r"in imagefolder \(0..2\)"):
        load(lambda c: (to_folder(c), c["experiments"]["zeroshot"].update(omitted=[[3]])))
    # a folder that is not there yet: the class ids wait for the preflight (dataset_shape)
    cfg = load(lambda c: (to_folder(c), c["dataset"].update(root=str(tmp_path / "later")))).config
    (tmp_path / "later").symlink_to(root)
    cfg["experiments"]["zeroshot"]["omitted"] = [[5]]
    with pytest.raises(ConfigError, match=r"class ids \[5\] do not exist"):
        dataset_shape(cfg)


@pytest.mark.parametrize("root, ok", [("../elsewhere", False), ("data/../../x", False), ("data/../data", True),
                                      ("/abs/data", True), ("data", True)])
def test_dataset_root_must_stay_inside_the_project_unless_absolute(load, root, ok):
    mutate = lambda c: c["dataset"].update(name="cifar10", root=root, download=True)  # noqa: E731
    if ok:
        load(mutate)
    else:
        with pytest.raises(ConfigError, match=r"^config key 'dataset.root': .* leads outside the project folder; "
                                              r"use a path inside it \(e.g. data\) or an absolute path$"):
            load(mutate)


# ----------------------------------------------------------------------------------------------- CIFAR pickles
class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_cifar_pickle_is_refused_without_running_code(tmp_path):
    folder = tmp_path / get_dataset("cifar100").folder
    folder.mkdir()
    marker = tmp_path / "pwned"
    payload = {"data": _Exploit(marker), "fine_labels": [0]}
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match=r"^mcmikd refuses to load CIFAR file .*train: it asks for (posix|os|nt)"
                                        r"\.system, which no CIFAR file needs"):
        load_dataset("cifar100", root=str(tmp_path), verify_checksums=False)
    assert not marker.exists()
    with open(folder / "train", "rb") as handle:  # the same file through plain pickle would have run it
        pickle.load(handle)
    assert marker.exists()


def test_a_real_format_cifar_batch_still_loads(tmp_path):
    path = tmp_path / "data_batch_1"
    rng = np.random.default_rng(0)
    batch = {"batch_label": "training batch 1 of 5", "data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
             "labels": [1, 2, 3], "filenames": ["a.png", "b.png", "c.png"]}
    for protocol in (2, 4, 5):  # 2: the archive's (Python 2) protocol; 4, 5: a folder written by Python 3
        path.write_bytes(pickle.dumps(batch, protocol=protocol))
        back = safe_unpickle(path)
        assert np.array_equal(back["data"], batch["data"]) and back["labels"] == [1, 2, 3]
        assert back["batch_label"] == "training batch 1 of 5" and back["data"].dtype == np.uint8
    path.write_bytes(pickle.dumps(np.arange(3, dtype=np.float32), protocol=2))
    with pytest.raises(DataError, match="not a dict"):
        safe_unpickle(path)


def test_a_class_folder_name_that_is_not_utf8_is_refused_in_one_line_before_any_job(tmp_path):
    """Such a name trains, then breaks the tables and figures at the end; the folder check refuses it first."""
    import os

    from mcmikd.datasets.imagefolder import scan

    root = _folder(tmp_path, {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dog": 1}})
    os.rename(os.fsencode(root / "train" / "dog"), os.fsencode(root / "train") + b"/d\xf6g")
    with pytest.raises(DataError) as info:
        scan(root)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"class folder {root / 'train' / 'd�g'} has a name that is "
                                                       f"not UTF-8 text")
