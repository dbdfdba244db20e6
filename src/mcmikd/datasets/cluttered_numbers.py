"""Cluttered numbers: two-digit numbers "00"–"99" (100 classes) written with scikit-learn's handwritten digits on
32×32 canvases among fragments of other digits, with each image's object box recorded (bundled, no download).

Why a second bundled task: on the 10-class cluttered digits a resnet8 student trained to convergence comes within
about 2 points of its resnet20 teacher (docs/results/cluttered-hard/, section 5), leaving a teacher little to give.
Knowledge distillation gains grow with the number of classes and the structure among them (Hinton et al., 2015,
§3; the KD literature's CIFAR-100 gains exceed its CIFAR-10 ones), and a two-digit number has that structure:
"37" shares a digit with "30"–"39" and with "07"–"97", which a teacher's soft targets carry and one-hot labels do
not. The construction is cluttered digits' (`mcmikd.datasets.cluttered_digits`, after Jaderberg et al., 2015,
§4.1), with two digits per canvas:

1. The 1,797 source digits are split into train and test sources first (stratified, `test_fraction`,
   `split_seed`), so no source digit is in both splits.
2. Each split has `placements` × (its number of sources) canvases (`test_placements` for the test split; default
   `placements`), so a source digit is used about 2 × `placements` times. The canvases' numbers are 0–99 equally
   often (± 1), in a seeded random order; a number's tens digit and its units digit are each a source of that digit
   class drawn uniformly from the split. The canvas first gets `clutter` fragments of other digits of the split (as
   cluttered digits), then the tens digit, upscaled to a side uniform in `digit_size`, at a uniform position in the
   left half (x + side ≤ 16), and the units digit, likewise, in the right half (x ≥ 16); pixels combine by maximum.
3. The object box is the tight box of both digits' ink (pixels ≥ ¼ of full intensity); `info["train_sources"]`
   holds each training canvas's tens-digit source (a `dataset.validation` split keeps canvases of one tens source
   on one side; their units sources may be shared).

Every random number comes from numpy's PCG64 seeded by `split_seed` (one stream per split) and the arithmetic is
float64 elementwise numpy, so the images are the same bits on every CPU.
"""

from __future__ import annotations

from mcmikd.datasets.cluttered_digits import CANVAS, INK, ClutteredDigits

HALF = CANVAS // 2


class ClutteredNumbers(ClutteredDigits):
    name = "cluttered_numbers"
    class_names = tuple(f"{i:02d}" for i in range(100))
    # num_train (inherited): placements × training sources canvases, as cluttered digits

    @classmethod
    def check(cls, ds: dict) -> None:
        """Two digits must fit side by side: a one-line ConfigError (before any job) for a side above 16 px."""
        from mcmikd.errors import ConfigError

        if int(ds.get("digit_size", (12, 18))[1]) > HALF:
            raise ConfigError(f"config key 'dataset.digit_size': {list(ds.get('digit_size', (12, 18)))} is too large "
                              f"for cluttered_numbers; two digits share a {CANVAS} px canvas, so use sides ≤ {HALF}, "
                              f"e.g. [10, 14]")

    @classmethod
    def load(cls, test_fraction: float = 0.25, split_seed: int = 0, placements: int = 2, test_placements=None,
             clutter: int = 4, digit_size=(12, 18), fragment_size: int = 6):
        return load_cluttered_numbers(test_fraction=test_fraction, split_seed=split_seed, placements=placements,
                                      test_placements=test_placements, clutter=clutter, digit_size=tuple(digit_size),
                                      fragment_size=fragment_size)


def _compose_numbers(sources, labels, indices, placements: int, clutter: int, digit_size, fragment_size: int, rng):
    """`placements` × len(`indices`) canvases (N, 32, 32) float64, their numbers, boxes (N, 4) and tens-digit
    sources, from the sources `indices` (module docstring, step 2)."""
    import numpy as np

    from mcmikd.datasets.cluttered_digits import draw_clutter, upscale

    low, high = int(digit_size[0]), int(digit_size[1])
    pool = np.asarray(indices)
    by_class = [pool[labels[pool] == c] for c in range(10)]
    images, numbers, boxes, origin = [], [], [], []
    count = placements * len(indices)
    for number in rng.permutation(np.arange(count) % 100).tolist():  # every number equally often (± 1)
        tens, units = (int(by_class[d][rng.integers(len(by_class[d]))]) for d in divmod(number, 10))
        canvas = np.zeros((CANVAS, CANVAS))
        draw_clutter(canvas, sources, pool, {tens, units}, clutter, (low, high), fragment_size, rng)
        ink = np.zeros((CANVAS, CANVAS), dtype=bool)
        for src, x_low in ((tens, 0), (units, HALF)):
            side = int(rng.integers(low, high + 1))
            digit = upscale(sources[src], side)
            y = int(rng.integers(0, CANVAS - side + 1))
            x = int(rng.integers(x_low, x_low + HALF - side + 1))
            canvas[y:y + side, x:x + side] = np.maximum(canvas[y:y + side, x:x + side], digit)
            ink[y:y + side, x:x + side] |= digit >= INK
        ys, xs = np.nonzero(ink)
        boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
        images.append(canvas)
        numbers.append(number)
        origin.append(tens)
    return np.stack(images), np.asarray(numbers, dtype=np.int64), boxes, origin


def load_cluttered_numbers(test_fraction: float = 0.25, split_seed: int = 0, placements: int = 2,
                           test_placements: int | None = None, clutter: int = 4,
                           digit_size: tuple[int, int] = (12, 18), fragment_size: int = 6):
    """The cluttered-numbers dataset (module docstring) as a `DatasetTensors`: uint8 images (N, 1, 32, 32), int64
    labels 0–99 (the number), mean/std of the training images, and in `info` the object boxes, tens-digit sources and
    construction parameters. Raises ValueError for a digit side outside [8, 16] (two must fit side by side) or
    low > high, a fragment size outside [2, 32], placements < 1 or clutter < 0."""
    from mcmikd.datasets.cluttered_digits import build_cluttered

    return build_cluttered("cluttered_numbers", ClutteredNumbers.class_names,
                           "two digits per canvas, cluttered (Jaderberg et al., 2015, §4.1)", _compose_numbers, HALF,
                           f" (two digits side by side on {CANVAS} px)", test_fraction, split_seed, placements,
                           test_placements, clutter, digit_size, fragment_size)
