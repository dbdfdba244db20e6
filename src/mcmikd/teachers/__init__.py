"""Teacher objectives as plug-ins, like the KD methods in `mcmikd.distill`.

`OBJECTIVES` maps each config name to "module:Class"; an objective module imports torch only inside the
functions that train, so the Snakefile can read names, start points and hyper-parameter defaults at parse time.
A new teacher objective is one file in this folder plus one line here (see docs/extending.md, "Adding a teacher
objective").

Three names describe a teacher, and they are kept apart everywhere:
  * the **objective** — the config name here (e.g. the MLL or the MCMI objective);
  * the **variant** — the objective with the hyper-parameters that name its result folder (MCMI with its λ:
    `teachers/<arch>/<variant>/`);
  * the **role** of a result file — "teacher" or "student".
"""

from __future__ import annotations

OBJECTIVES: dict[str, str] = {
    "mll": "mcmikd.teachers.mll:MLL",
    "mcmi": "mcmikd.teachers.mcmi:MCMI",
    "ce_finetune": "mcmikd.teachers.ce_finetune:CEFinetune",
}

FINETUNING_CAPTION = (
    "Fine-tuning of every fine-tuned teacher (one row each; e.g. MCMI and its λ = 0 control; one thin line per "
    "teacher seed, teachers.seeds), starting from the teacher of the same seed it fine-tunes: training "
    "cross-entropy, the training CMI term of the loss where the objective has one "
    "(−neg_cmi/λ, the mean KL divergence between each sample's prediction and its frozen class centroid, nats), "
    "test accuracy and test CMI (nats) after each fine-tuning epoch, and the teacher check (last panel): the "
    "teacher's true CMI on the clean training images (eval mode, T = 1, fresh centroids), the mean KL to the "
    "centroids its loss uses, and their difference, the drift of the class means away from those centroids "
    "(nats; the KL is CMI + drift, and only the CMI is what the paper means). Dashed lines are the final values of "
    "the start "
    "teacher of each seed (its training CE, its model accuracy and its test CMI). A teacher seed whose accuracy fell "
    "below the collapse threshold is titled COLLAPSED in red, and no students were distilled from it.")


def get_objective(name: str):
    """The `TeacherObjective` class registered under `name`; ConfigError (one line) for an unknown name."""
    from mcmikd.registry import lookup

    return lookup(OBJECTIVES, name, "teacher objective")
