"""The zero-shot t-SNE job: test-set logits of a zero-shot setting's teachers and students, each embedded in 2-D
with scikit-learn's t-SNE (`sklearn.manifold.TSNE`, van der Maaten & Hinton 2008), one embedding per model.

The official code's `TSNE.py` draws such a t-SNE of the logits of the 10,000 CIFAR-10 test images at perplexity 15,
with the omitted classes drawn apart; it numbers the classes from 1. Here class ids are the dataset's own (0-based),
the same ids as the config's `omitted` lists and every table.

Output: a CSV with one row per (panel, embedded test image) — `panel`, `test_index` (0-based index into the test
set), `label` (0-based true class), `omitted` (1 when the label is an omitted class), `pred` (the model's argmax
class), `x`, `y` (t-SNE coordinates, no unit) — and a JSON record of what was embedded and how (the t-SNE
parameters, its `random_state`, the scikit-learn version, each panel's model file, epoch, test accuracy on the
embedded images, and final KL divergence, or why a panel is empty). The figure is drawn from these two files
(`mcmikd.experiments.zeroshot.tsne_figure`), so redrawing it computes nothing.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch

from mcmikd.data import DatasetTensors
from mcmikd.engine import Runtime, log, predict
from mcmikd.errors import DataError, first_line
from mcmikd.io import atomic_path, damaged_error, provenance, verify_file, write_json

COLUMNS = ("panel", "test_index", "label", "omitted", "pred", "x", "y")
INIT = "pca"  # scikit-learn's default since 1.2; stated so that an older default cannot change the embedding


def embedded_indices(num_test: int, max_images: int | None, seed: int) -> np.ndarray:
    """Test-set indices to embed (sorted, int64): all `num_test` of them, or `max_images` drawn without replacement
    by a generator seeded with `seed` when fewer are asked for."""
    if max_images is None or max_images >= num_test:
        return np.arange(num_test, dtype=np.int64)
    generator = torch.Generator().manual_seed(int(seed))
    return np.sort(torch.randperm(num_test, generator=generator)[:max_images].numpy()).astype(np.int64)


def embed(logits: np.ndarray, perplexity: float, seed: int) -> tuple[np.ndarray, float, dict]:
    """(N, 2) t-SNE embedding of `logits` (N, K), the final KL divergence, and the estimator's parameters.

    scikit-learn's Barnes–Hut t-SNE with `init="pca"`, `random_state=seed`, learning rate "auto" and its other
    defaults, on one thread (OpenMP and BLAS alike), so that the result does not depend on the machine's core count
    (and is not slowed down by threads competing with the other jobs). With the PCA initialisation the optimisation
    itself draws nothing at random: `random_state` reaches only the PCA's randomized solver, and the embedding is
    in practice the same for every seed; it is recorded all the same."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(logits)
    if not perplexity < n:
        raise DataError(f"t-SNE perplexity {perplexity:g} needs more than {perplexity:g} images, got {n}; lower "
                        f"the zero-shot experiment's tsne.perplexity or raise tsne.max_images")
    tsne = TSNE(n_components=2, perplexity=float(perplexity), init=INIT, learning_rate="auto",
                random_state=int(seed), n_jobs=1)
    with threadpool_limits(limits=1):  # its OpenMP gradient and the BLAS of its PCA on one thread
        points = tsne.fit_transform(np.asarray(logits, dtype=np.float64))
    params = {k: v for k, v in tsne.get_params().items() if isinstance(v, (str, int, float, bool, type(None)))}
    return points, float(tsne.kl_divergence_), params


def _load(path: str, runtime: Runtime):
    """(model or None, its checkpoint dict): None when the file records a run that trained nothing."""
    from mcmikd.jobs.common import load_model

    verify_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise damaged_error(path, f"unreadable: {first_line(exc)}") from None
    if "state_dict" not in ckpt:
        return None, ckpt
    return load_model(path, runtime)


def tsne_logits(data_path: str, models: list[str], params: dict, csv_out: str, record_out: str,
                threads: int | None = None) -> dict:
    """Embed the test-set logits of every panel in `params['panels']` (each with its model file, same order in
    `models`) and write the CSV and the JSON record (see the module docstring). `params`: `omitted` (0-based class
    ids), `seed` (the student seed shown; t-SNE's random_state and the subset's seed), `perplexity`, `max_images`
    (None: every test image), `panels` [{name, role, objective, method, ...}], `runtime`."""
    import sklearn

    from mcmikd.augment import Normalizer

    t0 = time.perf_counter()
    if len(models) != len(params["panels"]):
        raise DataError(f"t-SNE job: {len(models)} model files for {len(params['panels'])} panels")
    runtime = Runtime.from_config(params["runtime"], threads)
    data = DatasetTensors.from_file(data_path)
    seed, perplexity = int(params["seed"]), float(params["perplexity"])
    omitted = sorted(int(c) for c in params["omitted"])
    index = embedded_indices(len(data.test_labels), params.get("max_images"), seed)
    images = data.test_images[torch.from_numpy(index)]
    labels = data.test_labels[torch.from_numpy(index)].long().numpy()
    is_omitted = np.isin(labels, omitted).astype(np.int64)
    normalize = Normalizer(data.mean, data.std, runtime.device)
    rows, panels, tsne_params = [], {}, None
    for panel, path in zip(params["panels"], models):
        name = panel["name"]
        model, ckpt = _load(path, runtime)
        entry = {**panel, "model_file": str(Path(path)), "epoch": ckpt.get("epoch"), "status": "ok"}
        if model is None or ckpt.get("status", "ok") != "ok":
            entry.update(status=ckpt.get("status", "skipped"), reason=ckpt.get("reason"))
            log(f"{name}: no embedding ({entry['status']}: {entry['reason']})")
            panels[name] = entry
            continue
        with torch.no_grad():
            logits = predict(model, images, normalize, runtime).cpu().double().numpy()
        if not np.isfinite(logits).all():
            entry.update(status="non-finite", reason="the model's logits are not finite")
            panels[name] = entry
            continue
        t1 = time.perf_counter()
        points, kl, tsne_params = embed(logits, perplexity, seed)
        pred = logits.argmax(1)
        entry.update(kl_divergence=kl, acc=float((pred == labels).mean() * 100),
                     acc_omitted=float((pred[is_omitted == 1] == labels[is_omitted == 1]).mean() * 100)
                     if is_omitted.any() else None, seconds=round(time.perf_counter() - t1, 2))
        log(f"{name}: {len(points)} points embedded in {entry['seconds']} s (KL {kl:.3f})")
        panels[name] = entry
        rows += [(name, int(i), int(c), int(o), int(p), float(x), float(y))
                 for i, c, o, p, (x, y) in zip(index, labels, is_omitted, pred, points)]
    with atomic_path(csv_out) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows((*r[:5], f"{r[5]:.6g}", f"{r[6]:.6g}") for r in rows)
    record = {"setting": params.get("setting"), "omitted": omitted, "class_names": list(data.class_names),
              "num_images": int(len(index)), "num_test": int(len(data.test_labels)), "seed": seed,
              "tsne": {"perplexity": perplexity, "init": INIT, "random_state": seed, "n_components": 2,
                       "params": tsne_params, "sklearn_version": sklearn.__version__},
              "panels": panels, **data.evaluation_record(),
              "provenance": provenance(params, seed, str(runtime.device), time.perf_counter() - t0)}
    write_json(record_out, record)
    return record
