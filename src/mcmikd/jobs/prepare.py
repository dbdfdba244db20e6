"""The `prepare_data` job: the configured dataset (a plug-in of `mcmikd.datasets`) as one tensor file."""

from __future__ import annotations

from mcmikd.datasets import load_dataset
from mcmikd.engine import log


def prepare_data(params: dict, output: str) -> None:
    from mcmikd.datasets import get_dataset

    spec = get_dataset(params["name"])
    if spec.streams:  # read from its files by every job (mcmikd.streaming): the file lists only
        from mcmikd.streaming import StreamedDataset

        data = StreamedDataset.from_index(spec.index(params["root"]), image_size=spec.fixed_image_size)
        log(f"{data.name}: {len(data.train_labels)} train / {len(data.test_labels)} test image files, "
            f"{data.num_classes} classes, streamed at {data.image_size}×{data.image_size}")
        data.to_file(output)
        return
    data = load_dataset(**params)
    log(f"{data.name}: {len(data.train_labels)} train / {len(data.test_labels)} "
        f"{data.info.get('evaluated_on', 'test')} images, "
        f"{data.num_classes} classes, {data.in_channels}×{data.image_size}×{data.image_size}")
    data.to_file(output)


