"""Cluttered digits: scikit-learn's 1,797 handwritten digits placed on 32×32 canvases among fragments of other
digits, with each image's object box recorded (bundled, no download).

The construction is the Cluttered-MNIST idea of the spatial transformer paper (Jaderberg et al., NeurIPS 2015,
§4.1: a digit at a random position on a larger canvas with random fragments of other digits as clutter), made
here from the scikit-learn digits so that it needs no download:

1. The 1,797 source images are split into train and test sources first (seeded, stratified by class, as the
   `digits` dataset splits them: `sklearn.model_selection.train_test_split`), so no source digit is in both.
2. Each source digit is placed `placements` times (test sources `test_placements` times, default the same: more
   test canvases measure each model more finely at no training cost). A placement upscales the 8×8 digit bilinearly to a
   side drawn uniformly from `digit_size` = [low, high] px, puts it at a uniform random position on the 32×32
   canvas, and first draws `clutter` fragments on the canvas: `fragment_size`² crops (with ink) of other digits
   of the SAME split, each upscaled the same way, at uniform random positions. Pixels combine by maximum.
3. The object box is the tight box (x0, y0, x1, y1; x1, y1 exclusive) of the placed digit's pixels of at
   least a quarter of full intensity (its ink, not the bilinear fringe); it is in `info["train_boxes"]` and
   `info["test_boxes"]`, with each image's source index in `info["train_sources"]` / `info["test_sources"]`.

Every random number comes from numpy's PCG64 seeded by `split_seed` (one stream per split), and the arithmetic
is float64 elementwise numpy (no BLAS, no torch kernels), so the images are the same bits on every CPU.
A held-out validation split (`dataset.validation`) of this dataset is drawn by source as well
(`mcmikd.datasets.hold_out_validation` keeps all placements of a source on one side).
"""

from __future__ import annotations

import math

from mcmikd.datasets.base import DatasetSpec

NUM_SOURCES = 1797
CANVAS = 32
INK = 0.25  # a pixel of the placed digit is part of the object (its box) at ≥ this fraction of full intensity


class ClutteredDigits(DatasetSpec):
    name = "cluttered_digits"
    class_names = tuple(str(i) for i in range(10))
    in_channels = 1
    hflip = False  # a mirrored 2, 3, 4, 5, 7 or 9 is not that digit
    fixed_image_size = CANVAS
    config_keys = ("test_fraction", "split_seed", "placements", "test_placements", "clutter", "digit_size",
                   "fragment_size")
    has_boxes = True  # info holds train_boxes / test_boxes (the CAM localization table reads them)

    @classmethod
    def params(cls, ds: dict) -> dict:
        """As `DatasetSpec.params`, without `test_placements` while it is null (the same data as `placements`)."""
        return {k: v for k, v in super().params(ds).items() if not (k == "test_placements" and v is None)}

    @classmethod
    def num_train(cls, ds: dict) -> int:
        return (NUM_SOURCES - math.ceil(float(ds["test_fraction"]) * NUM_SOURCES)) * int(ds.get("placements", 2))

    @classmethod
    def load(cls, test_fraction: float = 0.25, split_seed: int = 0, placements: int = 2, test_placements=None,
             clutter: int = 4, digit_size=(12, 18), fragment_size: int = 6):
        return load_cluttered_digits(test_fraction=test_fraction, split_seed=split_seed, placements=placements,
                                     test_placements=test_placements, clutter=clutter, digit_size=tuple(digit_size),
                                     fragment_size=fragment_size)


def upscale(image, side: int):
    """Bilinear resize (half-pixel centres, edge clamped: `F.interpolate(..., align_corners=False)`'s
    convention) of one 2-D float64 array to side × side, in float64 elementwise numpy (the same bits on every
    CPU)."""
    import numpy as np

    h, w = image.shape

    def axis(n_in: int):
        pos = (np.arange(side, dtype=np.float64) + 0.5) * (n_in / side) - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    r0, r1, rw = axis(h)
    c0, c1, cw = axis(w)
    rows = image[r0, :] * (1 - rw)[:, None] + image[r1, :] * rw[:, None]
    return rows[:, c0] * (1 - cw)[None, :] + rows[:, c1] * cw[None, :]


def draw_clutter(canvas, sources, pool, exclude, clutter: int, digit_size, fragment_size: int, rng) -> None:
    """Draw `clutter` fragments on `canvas` (32×32 float64, in place, by maximum): each a `fragment_size`² crop with
    ink of a source digit drawn from `pool` (source indices; never one in `exclude` while the pool has others),
    upscaled to a side uniform in `digit_size`, at a uniform random position. Random numbers from `rng`, in a fixed
    order (the images are the same bits on every CPU)."""
    import numpy as np

    low, high = int(digit_size[0]), int(digit_size[1])
    for _ in range(clutter):
        other = int(pool[rng.integers(len(pool))])
        while other in exclude and len(pool) > 1:
            other = int(pool[rng.integers(len(pool))])
        big = upscale(sources[other], int(rng.integers(low, high + 1)))
        f = min(fragment_size, big.shape[0])
        for _attempt in range(10):  # a crop with some ink (the digit, not its empty margin)
            y, x = (int(v) for v in rng.integers(0, big.shape[0] - f + 1, size=2))
            crop = big[y:y + f, x:x + f]
            if crop.max() >= 0.5:
                break
        cy, cx = (int(v) for v in rng.integers(0, CANVAS - f + 1, size=2))
        canvas[cy:cy + f, cx:cx + f] = np.maximum(canvas[cy:cy + f, cx:cx + f], crop)


def _compose(sources, labels, indices, placements: int, clutter: int, digit_size, fragment_size: int, rng):
    """Canvases (N, 32, 32) float64 in [0, 1], labels, boxes (N, 4) and source indices for the sources
    `indices` (each placed `placements` times, in source order, then placement order)."""
    import numpy as np

    low, high = int(digit_size[0]), int(digit_size[1])
    images, boxes, origin = [], [], []
    pool = np.asarray(indices)
    for src in indices:
        for _ in range(placements):
            canvas = np.zeros((CANVAS, CANVAS))
            draw_clutter(canvas, sources, pool, {src}, clutter, (low, high), fragment_size, rng)
            side = int(rng.integers(low, high + 1))
            digit = upscale(sources[src], side)
            y, x = (int(v) for v in rng.integers(0, CANVAS - side + 1, size=2))
            canvas[y:y + side, x:x + side] = np.maximum(canvas[y:y + side, x:x + side], digit)
            ys, xs = np.nonzero(digit >= INK)
            boxes.append([x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1])
            images.append(canvas)
            origin.append(int(src))
    return np.stack(images), np.repeat(labels[np.asarray(indices)], placements), boxes, origin


def split_sources(test_fraction: float, split_seed: int):
    """scikit-learn's digits as float64 (1797, 8, 8) in [0, 1], their int64 labels, and the sorted train and test
    source indices: a stratified split (`train_test_split`, `split_seed`), so no source is on both sides."""
    import numpy as np
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    sources = bunch.images.astype(np.float64) / 16.0
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_fraction, random_state=split_seed,
                                           stratify=labels)
    return sources, labels, np.sort(train_idx), np.sort(test_idx)


def exact_mean_std(images) -> tuple[tuple[float], tuple[float]]:
    """Mean and unbiased std (as `torch.std`) in [0, 1] of uint8 `images` (N, 1, H, W), from integer sums: exact,
    the same on every CPU."""
    import numpy as np

    pixels = images.numpy().astype(np.int64)
    count, total, squares = pixels.size, int(pixels.sum()), int((pixels * pixels).sum())
    return (total / count / 255,), (math.sqrt(max(0.0, (squares - total * total / count) / (count - 1))) / 255,)


def load_cluttered_digits(test_fraction: float = 0.25, split_seed: int = 0, placements: int = 2,
                          test_placements: int | None = None, clutter: int = 4,
                          digit_size: tuple[int, int] = (12, 18), fragment_size: int = 6):
    """The cluttered-digits dataset (module docstring) as a `DatasetTensors`: uint8 images (N, 1, 32, 32), int64
    labels, mean/std of the training images, and in `info` the object boxes, source indices and construction
    parameters. `test_placements` (None: `placements`) canvases are made from each test source. Raises ValueError for
    a digit size outside [8, 32] or low > high, a fragment size outside [2, 32], placements < 1 or clutter < 0."""
    return build_cluttered("cluttered_digits", ClutteredDigits.class_names, "cluttered (Jaderberg et al., 2015, §4.1)",
                           _compose, CANVAS, "", test_fraction, split_seed, placements, test_placements, clutter,
                           digit_size, fragment_size)


def build_cluttered(name: str, class_names, source: str, compose, max_side: int, side_note: str, test_fraction: float,
                    split_seed: int, placements: int, test_placements: int | None, clutter: int, digit_size,
                    fragment_size: int):
    """What the cluttered datasets share: the parameter checks (one-line ValueError), the split by source
    (`split_sources`), one PCG64 stream per split seeded by (`split_seed`, 0 train / 1 test), the canvases of each
    split from `compose(sources, labels, indices, placements, clutter, (low, high), fragment_size, rng)` -> (float64
    images (N, 32, 32), int64 labels, boxes, source per image), uint8 rounding, the exact statistics, and the
    `DatasetTensors` with its `info`. `max_side`: the largest digit side; `side_note`: why (in the error)."""
    import numpy as np
    import torch

    from mcmikd.data import DatasetTensors

    low, high = (int(v) for v in digit_size)
    if not 8 <= low <= high <= max_side:
        raise ValueError(f"digit_size {list(digit_size)} must be [low, high] with 8 ≤ low ≤ high ≤ {max_side}"
                         f"{side_note}")
    if not 2 <= int(fragment_size) <= CANVAS:
        raise ValueError(f"fragment_size {fragment_size} must be in [2, {CANVAS}]")
    test_placements = placements if test_placements is None else test_placements
    if int(placements) < 1 or int(test_placements) < 1 or int(clutter) < 0:
        raise ValueError(f"placements ({placements}, test {test_placements}) must be ≥ 1 and clutter ({clutter}) ≥ 0")
    sources, labels, train_idx, test_idx = split_sources(test_fraction, split_seed)
    parts = {}
    for stream, (split, idx, times) in enumerate((("train", train_idx, placements),
                                                   ("test", test_idx, test_placements))):
        rng = np.random.Generator(np.random.PCG64([int(split_seed), stream]))
        images, split_labels, boxes, origin = compose(sources, labels, idx, int(times), int(clutter),
                                                      (low, high), int(fragment_size), rng)
        parts[split] = (torch.from_numpy(np.round(images * 255).astype(np.uint8)).unsqueeze(1).contiguous(),
                        torch.from_numpy(split_labels), boxes, origin)
    mean, std = exact_mean_std(parts["train"][0])
    return DatasetTensors(
        name=name,
        train_images=parts["train"][0], train_labels=parts["train"][1],
        test_images=parts["test"][0], test_labels=parts["test"][1],
        mean=mean, std=std, class_names=list(class_names), hflip=False,
        info={"source": f"sklearn.datasets.load_digits, {source}",
              "image_size": CANVAS, "test_fraction": test_fraction, "split_seed": split_seed,
              "placements": int(placements), "test_placements": int(test_placements), "clutter": int(clutter),
              "digit_size": [low, high],
              "fragment_size": int(fragment_size), "box_format": "x0, y0, x1, y1 (x1, y1 exclusive), pixels",
              "train_boxes": parts["train"][2], "test_boxes": parts["test"][2],
              "train_sources": parts["train"][3], "test_sources": parts["test"][3]},
    )
