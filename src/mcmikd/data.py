"""A prepared dataset as tensors (`DatasetTensors`, what `prepare_data` writes and every training job reads) and
the few-shot subsets of its training split.

`DatasetTensors` holds uint8 images (N, C, H, W) in file order, int64 labels, the normalisation constants and the
class names. Training code keeps these on the training device and augments whole batches there
(`mcmikd.augment`). The datasets themselves are plug-ins in `mcmikd.datasets` (one module each, registered in
`mcmikd.datasets.DATASETS`; `mcmikd.datasets.load_dataset` dispatches to them); this module does not import them,
so editing one dataset reruns only the jobs that load it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from mcmikd.errors import DataError, first_line


@dataclass
class DatasetTensors:
    """A loaded dataset: uint8 images (N, C, H, W) and int64 labels (N,) per split, per-channel mean/std in
    [0, 1], class names in label order, whether flips keep the class, and provenance (`info`)."""

    name: str
    train_images: torch.Tensor  # uint8 (N, C, H, W), file order
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str]
    hflip: bool  # whether horizontal flips preserve the label (False for digits)
    info: dict = field(default_factory=dict)

    @property
    def evaluated_on(self) -> str:
        """'test', or 'validation' when the evaluation split is a held-out part of the training set
        (`mcmikd.datasets.hold_out_validation`, config `dataset.validation`)."""
        return self.info.get("evaluated_on", "test")

    def evaluation_record(self) -> dict:
        """{'evaluated_on': 'validation'} for a result file of a validation run; {} otherwise (results of runs on
        the test set stay as they were)."""
        return {"evaluated_on": "validation"} if self.evaluated_on == "validation" else {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    def to_file(self, path) -> None:
        from mcmikd.io import torch_save

        torch_save(asdict(self), path)

    @classmethod
    def from_file(cls, path) -> DatasetTensors:
        from mcmikd.io import damaged_error, verify_file

        verify_file(path)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise DataError(f"prepared dataset {path} is missing; rerun the workflow to rebuild it") from None
        except Exception as exc:
            raise damaged_error(path, f"unreadable: {first_line(exc)}") from None
        if payload.get("streamed"):  # a dataset read from its files (ImageNet): the file lists, not the images
            from mcmikd.streaming import StreamedDataset

            return StreamedDataset.from_payload(payload)
        payload["mean"], payload["std"] = tuple(payload["mean"]), tuple(payload["std"])
        return cls(**payload)


def fewshot_subset(labels: torch.Tensor, fraction: float, mode: str = "first_n", seed: int = 0) -> torch.Tensor:
    """Indices of the training images a few-shot student may see.

    * `first_n` (the official code): the first ⌊fraction·N⌋ images in file order, whatever their class.
    * `stratified`: ⌊fraction·N_c⌋ images of every class c (at least one), drawn with `seed`.

    ⌊·⌋ is exact on the decimal the config wrote (`mcmikd.canonical.fraction_of`: 0.29 × 50,000 = 14,500). Raises
    a one-line ConfigError when a `first_n` subset would hold fewer images than there are classes (it could not
    hold one image of each; `stratified` always holds one per class), ValueError for a fraction outside (0, 1] or an
    unknown mode.
    """
    from mcmikd.canonical import fraction_of
    from mcmikd.errors import ConfigError

    n = len(labels)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    classes = int(torch.unique(labels).numel())
    if mode == "first_n" and fraction_of(n, fraction) < classes:
        raise ConfigError(f"few-shot fraction {fraction:g} keeps {fraction_of(n, fraction)} of {n} training images, "
                          f"fewer than the {classes} classes; use a fraction of at least {classes / n:.3g}")
    if mode == "first_n":
        return torch.arange(fraction_of(n, fraction))
    if mode == "stratified":
        gen = torch.Generator().manual_seed(int(seed))
        picks = []
        for c in torch.unique(labels):
            members = torch.nonzero(labels == c).flatten()
            k = max(1, fraction_of(len(members), fraction))
            picks.append(members[torch.randperm(len(members), generator=gen)[:k]])
        return torch.sort(torch.cat(picks)).values
    raise ValueError(f"unknown few-shot subset mode '{mode}'; use first_n or stratified")
