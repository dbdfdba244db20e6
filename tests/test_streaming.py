"""The ImageNet dataset plug-in and the streaming source (issue 21): a class-folder dataset decoded per batch in
DataLoader workers, with a seeded order and per-image augmentation draws, never held whole in memory."""

import numpy as np
import pytest
import torch
from PIL import Image

from mcmikd.datasets import dataset_params, get_dataset
from mcmikd.engine import Runtime, evaluate, make_generator
from mcmikd.errors import ConfigError, DataError
from mcmikd.streaming import (
    StreamedDataset,
    StreamSource,
    batch_indices,
    decode,
    eval_transform,
    evaluate_stream,
    sample_seed,
)

CLASSES = ("n02085620", "n02093754", "n02099601")  # three wnid folders (Chihuahua, Border terrier, golden retriever)


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    """root/train/<wnid>/ with 3 images per class (JPEG and PNG, odd sizes, one grayscale), root/val/ with 2."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for c, wnid in enumerate(CLASSES):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = 40 + 7 * i, 52 - 5 * c
                img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                if i == 1:
                    img.convert("L").save(folder / f"{wnid}_{i}.png")
                else:
                    img.save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


def _runtime():
    return Runtime.from_config({"device": "cpu", "threads": 1, "channels_last": False, "precision": "fp32",
                                "deterministic": True})


def _streamed(root, size=32, resize=36) -> StreamedDataset:
    return StreamedDataset.from_index(get_dataset("imagenet").index(root), image_size=size, resize=resize)


def _epoch(source, seed, batch=4):
    gen = make_generator(seed, source.device)
    return [tuple(t.clone() for t in b) for b in source.batches(gen, batch)], gen


def test_the_spec_indexes_folders_with_torchvisions_constants(imagenet_root):
    spec = get_dataset("imagenet")
    ds = {"name": "imagenet", "root": str(imagenet_root), "image_size": 32}
    assert spec.streams and not get_dataset("imagefolder").streams
    assert spec.shape(ds) == (3, 3, 224)  # image_size is ignored: 224 px crops
    assert dataset_params(ds) == {"name": "imagenet", "root": str(imagenet_root)}
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    files = spec.index(imagenet_root)
    assert files.class_names == list(CLASSES) and len(files.train) == 9 and len(files.val) == 6
    assert files.train_labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert spec.class_names_of({"name": "imagenet", "root": str(imagenet_root / "absent")}) is None
    with pytest.raises(DataError, match="streamed from its folders"):
        spec.load(root=str(imagenet_root))
    with pytest.raises(DataError, match=r"absent/train not found"):
        spec.check({"name": "imagenet", "root": str(imagenet_root / "absent")})


def test_decode_gives_rgb_uint8_at_the_files_size(imagenet_root):
    gray = decode(imagenet_root / "train" / CLASSES[0] / f"{CLASSES[0]}_1.png")
    assert gray.dtype == torch.uint8 and gray.shape == (3, 47, 52) and torch.equal(gray[0], gray[2])
    bad = imagenet_root / "bad.JPEG"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="corrupt image .*bad.JPEG"):
        decode(bad)


def test_eval_transform_is_resize_then_center_crop():
    image = torch.arange(3 * 60 * 80, dtype=torch.int64).remainder(256).to(torch.uint8).view(3, 60, 80)
    out = eval_transform(resize=32, crop=24)(image)
    assert out.shape == (3, 24, 24) and out.dtype == torch.uint8  # 60×80 → 32×42 → centre 24×24


def test_an_epoch_is_seeded_serves_every_image_once_and_does_not_depend_on_the_workers(imagenet_root):
    source = StreamSource(_streamed(imagenet_root), _runtime(), workers=0)
    global_rng = torch.get_rng_state()
    first, gen = _epoch(source, seed=5)
    assert torch.equal(torch.get_rng_state(), global_rng)  # decoding in this process leaves the global RNG alone
    assert [len(b[1]) for b in first] == [4, 5]  # the one-image last batch joins the one before
    images, labels, positions = (torch.cat(t) for t in zip(*first))
    assert sorted(positions.tolist()) == list(range(9)) and images.shape == (9, 3, 32, 32)
    assert images.dtype == torch.float32 and torch.equal(labels, source.visible_labels[positions])
    again, _ = _epoch(source, seed=5)
    assert all(torch.equal(a, b) for x, y in zip(first, again) for a, b in zip(x, y))
    other, _ = _epoch(source, seed=6)
    assert not torch.equal(torch.cat([b[2] for b in other]), positions)
    # a resumed run restores the generator's state at the epoch boundary: its next epoch is the same
    state = gen.get_state()
    second = [b[2] for b in source.batches(gen, 4)]
    resumed = make_generator(0, source.device)
    resumed.set_state(state)
    assert all(torch.equal(a, b) for a, b in zip(second, [b[2] for b in source.batches(resumed, 4)]))
    # two worker processes decode the same augmented images (draws are per image, not per worker)
    workers = StreamSource(_streamed(imagenet_root), _runtime(), workers=2)
    parallel, _ = _epoch(workers, seed=5)
    assert all(torch.equal(a, b) for x, y in zip(first, parallel) for a, b in zip(x, y))


def test_each_process_decodes_only_its_slice_of_every_global_batch(imagenet_root):
    from mcmikd.engine import rank_slices

    source = StreamSource(_streamed(imagenet_root), _runtime(), workers=0)
    whole, _ = _epoch(source, seed=5)  # batches of 4 and 5
    decoded = []

    class Counting(type(source.dataset)):  # counts the images the loader decodes (workers=0: in this process)
        def __getitem__(self, index):
            decoded.append(index)
            return super().__getitem__(index)

    source.dataset.__class__ = Counting
    ranks = [list(rank_slices(source, make_generator(5, source.device), 4, "keep", r, 2)) for r in (0, 1)]
    assert len(decoded) == 9  # each image decoded once over both ranks, not once per rank
    for b, batch in enumerate(whole):
        assert [len(ranks[r][b][1]) for r in (0, 1)] == [len(batch[1]) - len(batch[1]) // 2, len(batch[1]) // 2]
        assert [ranks[r][b][3] for r in (0, 1)] == [len(batch[1])] * 2  # the global batch's size, for the loss weight
        for t in range(3):  # the two slices are the global batch's images, labels and positions, bit for bit
            assert torch.equal(torch.cat([ranks[0][b][t], ranks[1][b][t]]), batch[t])


def test_per_image_seeds_differ_across_images_and_epochs():
    seeds = {sample_seed(e, i) for e in (1, 2**62 + 3) for i in range(1000)}
    assert len(seeds) == 2000 and all(0 <= s < 2**63 for s in seeds)


def test_batches_keep_every_image_and_never_step_on_one():
    order = torch.arange(9)
    assert batch_indices(order, 4) == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]
    assert batch_indices(order, 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    twelve = [list(range(5)), list(range(5, 10))]
    assert batch_indices(torch.arange(12), 5, "merge") == [twelve[0], twelve[1] + [10, 11]]  # 2 < 5 / 2
    assert batch_indices(torch.arange(12), 5, "keep") == [*twelve, [10, 11]]
    assert batch_indices(torch.arange(13), 5, "merge") == [*twelve, [10, 11, 12]]  # 3 ≥ 5 / 2
    with pytest.raises(ConfigError, match="only one training image"):
        batch_indices(torch.arange(1), 4)
    with pytest.raises(ValueError, match="last_batch"):
        batch_indices(order, 4, "drop")


def test_streamed_evaluation_equals_the_in_memory_one_on_the_same_crops(imagenet_root):
    from mcmikd.augment import Normalizer
    from mcmikd.models import create_model

    data = _streamed(imagenet_root, size=224, resize=256)
    torch.manual_seed(0)
    model = create_model("MobileNetV1", 3, 3).eval()
    runtime = _runtime()
    streamed = evaluate_stream(model, data, runtime, workers=0, batch_size=4)
    crops = data.test_images[list(range(len(data.test_labels)))]  # decoded on access, the same transform
    assert crops.shape == (6, 3, 224, 224) and torch.equal(crops[2], eval_transform()(decode(data.test_files[2])))
    direct = evaluate(model, crops, data.test_labels, Normalizer(data.mean, data.std, runtime.device), runtime, 3)
    assert streamed.confusion == direct.confusion and streamed.acc == direct.acc
    assert streamed.cmi == pytest.approx(direct.cmi, abs=1e-6) and streamed.loss == pytest.approx(direct.loss)


def test_the_imagenet_config_plans_and_its_dry_run_preflight_builds_both_pairs():
    """config/imagenet.yaml without data/imagenet: the grid plans and the pre-flight of a dry run builds every
    teacher–student–method combination at 224 px (what `snakemake -n --configfile config/imagenet.yaml` runs)."""
    import yaml

    from conftest import ROOT, SCHEMA
    from mcmikd.checks import preflight
    from mcmikd.config import load_grid

    config = yaml.safe_load((ROOT / "config" / "imagenet.yaml").read_text())
    config["dataset"]["root"] = "data/imagenet-absent-for-this-test"
    grid = load_grid(config, SCHEMA)
    assert {(r.t_arch, r.student) for r in grid.runs["main"] if r.method != "ce"} == {
        ("resnet34", "resnet18"), ("resnet50", "MobileNetV1")}
    assert {r.method for r in grid.runs["main"]} == {"ce", "kd", "at", "crd", "dkd"}
    lines = preflight(grid, dry_run=True).splitlines()
    assert lines[0].startswith("Note: dry run: data folder data/imagenet-absent-for-this-test not found")
    assert lines[1] == "preflight: 10 teacher–student–method combinations and 2 CAM layers build on 3×224² inputs"
    with pytest.raises(DataError, match="imagenet-absent-for-this-test/train not found"):
        preflight(grid)  # a real run refuses before any job


def test_the_jobs_prepare_train_finetune_measure_distil_and_map_through_the_streaming_source(imagenet_root,
                                                                                             tmp_path, monkeypatch,
                                                                                             one_torch_thread):
    """The workflow's own job functions on a streamed dataset: prepare_data writes the file lists (no image),
    an MLL teacher trains, an MCMI teacher fine-tunes from it (centroids and diagnostics over the streamed training
    images), its CMI is measured, a KD student distils from it and Eigen-CAM maps fixed validation images."""
    from mcmikd.data import DatasetTensors
    from mcmikd.jobs.cam import run_cam
    from mcmikd.jobs.prepare import prepare_data
    from mcmikd.jobs.student import train_student
    from mcmikd.jobs.teacher import measure_cmi, train_teacher

    monkeypatch.setattr("mcmikd.streaming.loader_workers", lambda: 0)  # decoding in the job's process (the workers
    # give the same batches: test_an_epoch_is_seeded_..._does_not_depend_on_the_workers); spawning them is slow here
    prepare_data({"name": "imagenet", "root": str(imagenet_root)}, str(tmp_path / "full.pt"))
    full = DatasetTensors.from_file(tmp_path / "full.pt")
    assert isinstance(full, StreamedDataset) and (full.num_classes, full.image_size) == (3, 224)
    assert full.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and len(full.test_files) == 6
    data = str(tmp_path / "data.pt")  # the same files at 64 px, so that the CPU test stays short
    _streamed(imagenet_root, size=64, resize=72).to_file(data)
    runtime = {"device": "cpu", "channels_last": False, "precision": "fp32", "deterministic": True}
    recipe = {"epochs": 1, "batch_size": 4, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
              "schedule": "multistep", "milestones": [1], "gamma": 0.1}
    common = {"arch": "MobileNetV1", "seed": 0, "recipe": recipe, "checkpoint": "last", "augment": {},
              "runtime": runtime, "collapse_ratio": 0.0}
    mll, mcmi = tmp_path / "mll", tmp_path / "mcmi"
    mll.mkdir(), mcmi.mkdir()
    m = train_teacher(data, {**common, "objective": "mll", "variant": "mll", "hp": {}}, str(mll / "model.pt"),
                      str(mll / "metrics.json"))
    assert [h["epoch"] for h in m["history"]] == [1] and 0 <= m["model_acc"] <= 100
    hp = {"lambda": 0.25, "lambda_per_teacher": {}, "centroids": "eval", "ema_decay": 0.9999}
    f = train_teacher(data, {**common, "objective": "mcmi", "variant": "mcmi", "hp": hp}, str(mcmi / "model.pt"),
                      str(mcmi / "metrics.json"), start_model=str(mll / "model.pt"),
                      start_metrics=str(mll / "metrics.json"))
    assert f["teacher"]["objective"] == "mcmi" and f["start_acc"] == m["model_acc"]
    cmi = measure_cmi(data, str(mcmi / "model.pt"), {"temperatures": [1.0], "runtime": runtime},
                      str(tmp_path / "cmi.json"))
    assert set(cmi) >= {"train", "test", "train_augmented"} and cmi["test"]["acc"] == pytest.approx(f["model_acc"])
    s = train_student(data, {"teacher": {"arch": "MobileNetV1", "objective": "mcmi", "variant": "mcmi", "seed": 0},
                             "student": "MobileNetV1", "method": "kd",
                             "hp": {"gamma": 0.5, "alpha": 0.5, "temperature": 1}, "recipe": recipe, "setting": {},
                             "seed": 0, "augment": {}, "runtime": runtime}, str(tmp_path / "student.json"),
                      str(mcmi / "model.pt"), str(mcmi / "metrics.json"))
    assert s["status"] == "ok" and s["num_train_visible"] == 9
    cam = run_cam(data, {"mll": str(mll / "model.pt"), "mcmi": str(mcmi / "model.pt")},
                  {"runtime": runtime, "per_class": 1, "classes": [1], "layer": "auto", "center": True},
                  str(tmp_path / "cam.pt"))
    assert cam["indices"] == [2] and cam["images"].shape == (1, 3, 64, 64)  # the first Border terrier
    assert cam["teachers"]["mcmi"]["maps"].shape == (1, 64, 64)
    with pytest.raises(ConfigError, match="streamed from its files, which supports no few-shot subset"):
        train_student(data, {"teacher": None, "student": "MobileNetV1", "method": "ce", "hp": {}, "recipe": recipe,
                             "setting": {"fraction": 0.5}, "seed": 0, "augment": {}, "runtime": runtime},
                      str(tmp_path / "fewshot.json"))


def test_what_a_streamed_dataset_cannot_do_stops_before_any_job(imagenet_root):
    import yaml

    from conftest import ROOT, SCHEMA, small_grid
    from mcmikd.checks import preflight
    from mcmikd.config import load_grid

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    small_grid(config)
    config["dataset"] = {"name": "imagenet", "root": str(imagenet_root)}
    assert "build on 3×224² inputs" in preflight(load_grid(config, SCHEMA))  # the folders are there: no note
    config["experiments"]["fewshot"]["enabled"] = True
    with pytest.raises(ConfigError, match=r"^config key 'experiments.fewshot': dataset 'imagenet' is streamed from "
                                          r"its files, which supports no few-shot subset"):
        preflight(load_grid(config, SCHEMA), dry_run=True)
    config["experiments"]["fewshot"]["enabled"] = False
    config["dataset"]["validation"] = {"fraction": 0.2, "seed": 0}
    with pytest.raises(ConfigError, match=r"^config key 'dataset.validation': dataset 'imagenet' is streamed"):
        preflight(load_grid(config, SCHEMA))
