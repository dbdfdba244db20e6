"""The paper's Fig. 3 (§4.4): Eigen-CAM maps (Muhammad & Yeasin, IJCNN 2020; `mcmikd.cam`) of each compared
teacher of one architecture on the same fixed test images."""

from __future__ import annotations

from mcmikd.errors import ConfigError
from mcmikd.experiments.base import Experiment, Figure

CAM_METHODS = ("eigencam", "eigencam_uncentered", "gradcam", "gradcampp")  # the maps a measurement job scores

CAPTION = (
    "The paper's Fig. 3 for the {{ snakemake.params.layout.arch }} teachers: Eigen-CAM maps (the first principal "
    "component of the chosen layer's activations, min–max scaled) of each compared teacher (one row each) on the "
    "same fixed test images. Each image is shown as the input (left) beside its map overlaid in a jet colour map "
    "(right; red = strongest); the title is the true class and the text under each map the teacher's prediction "
    "(red ✗ when wrong). The paper reports that MCMI teachers attend to more of the object than MLL teachers, whose "
    "maps concentrate on a few discriminative parts. The maps are those of teacher seed "
    "{{ snakemake.params.layout.teacher_seed }}, the first of teachers.seeds (one teacher per objective is shown).")


MEASURE_CAPTION = (
    "Eigen-CAM measured against each test image's object box, over every test image and teacher seed. Left: "
    "weakly-supervised localization of each map method on each compared teacher (box from the largest region above "
    "a fraction of the map's maximum; MaxBoxAcc: the localization accuracy at IoU ≥ 0.5, GT-known, at each method's "
    "best fraction, Choe et al. 2020), mean over teacher seeds with its 95 % t-interval. Right: the MCMI paper's "
    "claim on the Eigen-CAM "
    "maps — the share of the map's mass outside the object box (context), its area above "
    "{{ snakemake.params.layout.area_threshold }} of its maximum and its spatial entropy (0 = one pixel, 1 = flat), "
    "per compared teacher, with seed-level intervals. Numbers: table cam.")


class Cam(Experiment):
    name = "cam"
    title = "Eigen-CAM"
    properties = {
        "teachers": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True,
                     "description": "teacher architectures whose compared teachers are mapped (mcmikd.models.MODELS)"},
        "per_class": {"type": "integer", "minimum": 1, "default": 2,
                      "description": "the first k test images of each of `classes` are mapped"},
        "classes": {"oneOf": [{"type": "null"}, {"type": "array", "items": {"type": "integer", "minimum": 0},
                                                  "minItems": 1}], "default": None,
                    "description": "class ids whose first `per_class` test images are mapped (null: every class)"},
        "indices": {"type": "array", "items": {"type": "integer", "minimum": 0}, "default": [],
                    "description": "explicit test-set indices, used instead of per_class and classes when given"},
        "layer": {"type": "string", "default": "auto",
                  "description": "auto: the model's last convolutional stage; else one of the teacher's modules with "
                                 "a spatial map (checked before any job)"},
        "center": {"type": "boolean", "default": True,
                   "description": "centre the activations before the SVD, as pytorch-grad-cam; false is the "
                                  "paper's formula"},
        "measure": {"type": "boolean", "default": False,
                    "description": "also score the maps of every test image and teacher seed against the object "
                                   "boxes (datasets that record them: cluttered_digits; cam_measure jobs): the "
                                   "table and figure of the measurement give localization accuracy at IoU ≥ 0.5, IoU "
                                   "and pointing game of each map method, the Eigen-CAM map's context mass, area and "
                                   "entropy per teacher, with seed-level intervals and differences paired by image"},
        "box_threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.2,
                          "description": "fraction of a map's maximum that bounds its box "
                                         "(CAM, Zhou et al. 2016: 0.2)"},
        "box_thresholds": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                           "default": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                           "description": "thresholds over which MaxBoxAcc takes the best localization accuracy "
                                          "(Choe et al., CVPR 2020)"},
        "area_threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.5,
                           "description": "fraction of a map's maximum above which a pixel counts in its area"},
        "cam_methods": {"type": "array", "minItems": 1, "uniqueItems": True, "default": list(CAM_METHODS),
                    "items": {"enum": list(CAM_METHODS)},
                    "description": "maps scored: eigencam (centred), eigencam_uncentered (the paper's formula), "
                                   "gradcam, gradcampp (pytorch-grad-cam, true class)"},
    }
    required = ("teachers",)
    has_students = False

    def check_classes(self, where: str, num_classes: int) -> None:
        bad = [c for c in (self.body.get("classes") or []) if c >= num_classes]
        if bad:
            raise ConfigError(f"config key '{where}.classes': class ids {bad} do not exist (0..{num_classes - 1})")

    def pairs(self) -> list[dict]:
        return []

    def teacher_archs(self) -> list[str]:
        return list(self.body["teachers"])

    def teacher_seed(self) -> int:
        """The teacher seed whose maps are drawn: the first of `teachers.seeds`."""
        return self.grid.teacher_seeds()[0]

    def job_params(self, arch: str, variants: dict[str, str]) -> dict:
        """The Eigen-CAM job's own slice of the config (`variants`: objective -> result folder; `teacher_seed`: the
        first of `teachers.seeds`, whose teachers are shown)."""
        body = self.body
        return {"arch": arch, "variants": variants, "teacher_seed": self.teacher_seed(),
                "indices": list(body.get("indices") or []),
                "per_class": body["per_class"], "classes": body.get("classes"), "layer": body["layer"],
                "center": body["center"]}

    def check(self, where: str) -> None:
        super().check(where)
        if self.measures():
            from mcmikd.datasets import get_dataset

            name = self.grid.config["dataset"]["name"]
            if not getattr(get_dataset(name), "has_boxes", False):
                raise ConfigError(f"config key '{where}.measure': dataset '{name}' records no object boxes to measure "
                                  f"maps against; use a dataset that does (cluttered_digits) or set measure: false")

    def measures(self) -> bool:
        return bool(self.body.get("measure", False))

    def measure_settings(self) -> dict:
        """The block's measurement settings (schema defaults filled in), shared by the jobs and the table."""
        body = self.body
        return {"box_threshold": body["box_threshold"], "box_thresholds": list(body["box_thresholds"]),
                "area_threshold": body["area_threshold"], "methods": list(body["cam_methods"])}

    def measure_params(self, arch: str, variants: dict[str, str], teacher_seed: int) -> dict:
        """The CAM measurement job's own slice of the config (one teacher seed; every compared teacher)."""
        return {"arch": arch, "variants": variants, "teacher_seed": int(teacher_seed), "layer": self.body["layer"],
                **self.measure_settings()}

    def measure_files(self) -> list[str]:
        """Result paths (relative to results/<name>/) of every CAM measurement job."""
        if not self.measures():
            return []
        return [f"cam/{arch}/measure/seed{s}.json" for arch in self.body["teachers"] for s in self.grid.teacher_seeds()]

    def measure_layout(self) -> dict:
        layout = self.layout()
        return {"objectives": layout["objectives"], "labels": layout["labels"], "colors": layout["colors"],
                "archs": list(self.body["teachers"]), **self.measure_settings()}

    def figures(self) -> list[Figure]:
        layout = self.layout()
        extra = []
        if self.measures():
            extra = [Figure("cam_measured", "mcmikd.cam_table:figure", tuple(self.measure_files()), MEASURE_CAPTION,
                            self.title, "Eigen-CAM measured", self.measure_layout())]
        return extra + [Figure(f"cam_{arch}", "mcmikd.experiments.cam:figure", (f"cam/{arch}.pt",), CAPTION, self.title,
                       f"Eigen-CAM {arch}", {**layout, "arch": arch, "teacher_seed": self.teacher_seed()})
                        for arch in self.body["teachers"]]


def figure(inputs: list[str], layout: dict, metric: str, png: str, pdf: str, per_row: int = 5) -> None:
    """Fig. 3: each fixed test image beside its Eigen-CAM overlay, one row per compared teacher (in the layout's
    objective order); `per_row` images per row, more images continue in further blocks of rows."""
    import math

    import matplotlib as mpl
    import numpy as np
    import torch
    from matplotlib.figure import Figure as MplFigure

    from mcmikd import plots
    from mcmikd.io import verify_file

    with plots.theme():
        verify_file(inputs[0])
        cam = torch.load(inputs[0], map_location="cpu", weights_only=True)
        images, labels = np.asarray(cam["images"]), np.asarray(cam["labels"]).tolist()
        names = list(cam.get("class_names") or [])
        teachers = [(o, cam["teachers"].get(o)) for o in layout["objectives"]]
        per_row = max(1, min(per_row, len(images)))
        blocks = max(1, math.ceil(len(images) / per_row))
        rows = len(teachers)
        fig = MplFigure(figsize=(2.0 * per_row + 1.2, 1.5 * rows * blocks + 0.5))
        outer = fig.add_gridspec(blocks, 1, hspace=0.28, left=0.08, right=0.9, top=0.9, bottom=0.04)
        grids = [outer[b].subgridspec(rows, per_row, hspace=0.32, wspace=0.14) for b in range(blocks)]
        for i, image in enumerate(images):
            block, col = divmod(i, per_row)
            for r, (objective, t) in enumerate(teachers):
                ax_img, ax_cam = (fig.add_subplot(g) for g in grids[block][r, col].subgridspec(1, 2, wspace=0.04))
                plots.show_image(ax_img, image)
                plots.show_image(ax_cam, image)
                if r == 0:  # the image's true class, centred over its pair of panels
                    ax_img.text(1.02, 1.06, f"true: {plots.class_label(labels[i], names)}", transform=ax_img.transAxes,
                                ha="center", va="bottom", fontsize=9, fontweight="bold")
                if col == 0:
                    variant = f"\n{t['variant']}" if t else ""
                    ax_img.set_ylabel(f"{plots.label(objective, layout)}{variant}",
                                      color=plots.color(objective, layout), fontweight="bold")
                if not t:
                    plots.note(ax_cam, "no map")
                    continue
                ax_cam.imshow(np.asarray(t["maps"][i]), cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="nearest")
                pred = int(t["pred"][i])
                ax_cam.set_xlabel(f"pred: {plots.class_label(pred, names)}" + ("" if pred == labels[i] else " ✗"),
                                  fontsize=8, color="0.25" if pred == labels[i] else plots.OMITTED_COLOR, labelpad=2)
        arch, layer = next(((t["arch"], t["layer"]) for _, t in teachers if t), ("?", "?"))
        seed = layout.get("teacher_seed")
        fig.suptitle(f"Eigen-CAM of the {arch} teachers" + ("" if seed is None else f" (teacher seed {seed})")
                     + f" at {layer} (each pair: input, map over the input)",
                     fontweight="bold")
        fig.colorbar(mpl.cm.ScalarMappable(mpl.colors.Normalize(0, 1), "jet"),
                     cax=fig.add_axes((0.92, 0.3, 0.012, 0.4)), label="Eigen-CAM (min–max scaled)")
        plots.save(fig, png, pdf)
