"""What an experiment kind declares: its config block, its student runs, its table and its figures.

An `Experiment` is built from its config block and the grid (`mcmikd.config.Grid`) at Snakefile parse time,
without torch or pandas. Every student run it asks for is compared across the teacher objectives of the block
(`objectives`, default `teachers.objectives`; the first is the reference of every Δ; an objective whose control
is compared too also gets its Δ over the control). Layout keys: pairs, methods, objectives, labels, colors,
controls ({objective: its control}), must_raise ({objective: objectives whose CMI its teacher must exceed}). Tables and
figures are built in their jobs from the experiment's runs table (`runs/<experiment>.csv`) and the `layout` it declares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from mcmikd.config import Grid

PAIR = {"type": "object", "additionalProperties": False, "required": ["teacher", "student"],
        "description": "a teacher → student pair, {teacher, student}",
        "properties": {"teacher": {"type": "string",
                                   "description": "the teacher's architecture (mcmikd.models.MODELS)"},
                       "student": {"type": "string",
                                   "description": "the student's architecture (mcmikd.models.MODELS)"}}}
SEEDS = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000}, "minItems": 1,
         "uniqueItems": True}
NAMES = {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True}
NUMBERS = {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1, "uniqueItems": True}
TEMPERATURES = {**NUMBERS, "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 100}}  # beyond T = 100 the
# float32 softmax of logits / T no longer resolves the logits (KD's T² then scales rounding noise)
EXCLUDE = {
    "description": "method–pair combinations not to run (e.g. FSP across architectures, whose feature maps it "
                   "cannot pair); an entry without teacher/student applies to every pair",
    "type": "array", "default": [],
    "items": {"type": "object", "additionalProperties": False, "required": ["method"],
              "properties": {"method": {"type": "string", "description": "the method not to run"},
                             "teacher": {"type": "string", "description": "only with this teacher architecture"},
                             "student": {"type": "string", "description": "only with this student architecture"}}},
}
CMI_NOT_RAISED_NOTE = (
    "A † (\"CMI not raised\") marks a fine-tuned teacher, and its students' cells, whose measured CMI (training "
    "images, eval mode, T = 1) is not above that of every teacher it must beat (MCMI: its MLL start teacher and its "
    "λ = 0 control; docs/paper.md, \"What fine-tuning with frozen centroids does\"), compared seed by seed (MCMI "
    "teacher seed t against MLL and control seed "
    "t); the footnote under the Markdown/LaTeX table says for how many teacher seeds and gives the numbers, and the "
    "CSV's ``cmi_not_raised`` column the flag. Its students were still distilled from it.")
COMMON = {
    "enabled": {"type": "boolean", "default": True,
                "description": "false switches the experiment off (its block is still checked)"},
    "objectives": {**NAMES, "minItems": 1,
                   "description": "teacher objectives compared (default teachers.objectives); the first is the "
                                  "reference of every Δ"},
    "hp": {"type": "object", "additionalProperties": {"type": "object"},
           "description": "per-objective hyper-parameter overrides for this experiment, e.g. {mcmi: {lambda: 0.15}}: "
                          "only the objective's path hyper-parameters, so an override is a teacher of its own, "
                          "fine-tuned from the same start teacher"},
    "seeds": {**SEEDS, "description": "seeds of this experiment's student runs (default students.seeds); student "
                                      "seed s learns from teacher seed teachers.seeds[s % len(teachers.seeds)]"},
    "teacher_checkpoint": {
        "enum": ["last", "best"],
        "description": "which state of every compared fine-tuned teacher (MCMI and its control alike) the students "
                       "distil from: last (no model selection on the test set) or best (the best-on-test "
                       "epoch, best.pt; the official few-shot run's MCMI checkpoint); default: the one "
                       "teachers.finetuning.checkpoint keeps (last unless set). best reads the fine-tuning job's "
                       "best.pt (no teacher is retrained), its students' folders are `<variant>@best`, their result "
                       "files record the teacher file and epoch, and the table says it was selected on the test set. "
                       "Teachers trained from scratch (MLL) use teachers.training.checkpoint"},
}
CHECKPOINT_NOTE = ("Fine-tuned teachers (MCMI and its λ = 0 control alike): best-on-test checkpoint (official), "
                   "selected on the test set; MLL teacher: teachers.training.checkpoint.")


@dataclass(frozen=True)
class Figure:
    """One figure: `draw` ("module:function") is called as draw(inputs, layout, metric, png, pdf) in its job."""

    name: str  # file stem under figures/
    draw: str
    inputs: tuple[str, ...]  # its input files, relative to results/<name>/
    caption: str  # RST for the report (Jinja: {{ snakemake.params.metric }} works)
    subcategory: str
    label: str
    layout: dict = field(default_factory=dict, compare=False, hash=False)


class Experiment:
    """Base class (see the module docstring). Subclasses set the class attributes and override what differs."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    properties: ClassVar[dict[str, Any]] = {}  # JSON-schema properties of the block, besides COMMON
    required: ClassVar[tuple[str, ...]] = ()
    has_students: ClassVar[bool] = True
    setting_prefix: ClassVar[str | None] = None  # the student setting it owns ('frac', 'omit', 'T'); None: 'full'
    ce_baseline: ClassVar[bool] = False  # also train the teacher-free CE student
    # seed-paired gains of its students between compared teachers (`mcmikd.aggregate.write_gains`): None (a kind
    # whose arms are not one teacher each, e.g. the λ sweep), "top-1", or "classes" (also each omitted class's recall)
    gains: ClassVar[str | None] = None
    caption: ClassVar[str] = ""  # one-sentence table caption (Markdown, LaTeX)
    note: ClassVar[str] = ""  # the table's longer description in the report (RST)

    def __init__(self, body: dict, grid: Grid):
        self.body = body
        self.grid = grid

    # ------------------------------------------------------------------ config (parse time)
    @classmethod
    def schema(cls) -> dict:
        return {"type": "object", "additionalProperties": False, "required": list(cls.required),
                "properties": {**COMMON, **cls.properties}}

    def check(self, where: str) -> None:
        """Checks the schema cannot express; one-line ConfigError (`where` is 'experiments.<name>')."""

    def check_classes(self, where: str, num_classes: int) -> None:
        """Class ids in the block against the dataset's `num_classes` (also run by the preflight for image folders,
        whose classes are known only once the folder exists); one-line ConfigError."""

    def pairs(self) -> list[dict]:
        return list(self.body.get("pairs") or [self.body["pair"]])

    def pair_key(self) -> str:
        return "pairs" if "pairs" in self.body else "pair"

    def methods(self) -> list[str]:
        return list(self.body.get("methods", ["kd"]))

    def objectives(self) -> list[str]:
        return list(self.body.get("objectives") or self.grid.config["teachers"]["objectives"])

    def compared_teachers(self, pair: dict) -> list[tuple[str, dict]]:
        """(objective, hyper-parameter override) of every teacher its students of `pair` learn from, the reference
        first; by default one per compared objective without override. An override may set only the objective's
        `path_keys` (`Grid.teacher_variant`)."""
        return [(objective, {}) for objective in self.objectives()]

    def seeds(self) -> list[int]:
        return list(self.body.get("seeds", self.grid.config["students"]["seeds"]))

    def settings(self) -> list[str]:
        """The student settings (result folder names) of its runs."""
        return ["full"]

    def parse_setting(self, value: str) -> dict:
        """The part of a setting after `setting_prefix` ('0.1' of 'frac0.1') as a dict."""
        return {}

    def setting_params(self, parsed: dict) -> tuple[dict, dict]:
        """(data setting, method hyper-parameter overrides) of a student whose setting this kind owns."""
        return parsed, {}

    def method_overrides(self, method: str) -> dict:
        """Hyper-parameter overrides of `method` for the students whose setting this kind owns (e.g. few-shot CRD's
        memory bank); applied after `setting_params`'s. Only a kind with a `setting_prefix` can have them (its
        students' result folders are its own)."""
        return {}

    def teacher_checkpoint(self) -> str:
        """`last` or `best`: the state of the compared fine-tuned teachers its students distil from (default: the
        one teachers.finetuning.checkpoint keeps in model.pt)."""
        kept = self.grid.config["teachers"]["finetuning"].get("checkpoint", "last")
        return self.body.get("teacher_checkpoint") or kept

    def run_hp(self, run, parsed: dict) -> dict:
        """Method hyper-parameter overrides that depend on the run too (its method, teacher, student), e.g. a
        multiple of the method's own weight; {} by default."""
        return {}

    def cmi_temperatures(self) -> list[float]:
        """Temperatures at which this kind needs every teacher's CMI measured (besides teachers.cmi_temperatures)."""
        return []

    def teacher_archs(self) -> list[str]:
        """Teachers an experiment without students needs (one per compared objective)."""
        return []

    def layout(self) -> dict:
        """Plain data the table and figure jobs get as params (so a change reruns only them)."""
        objectives = self.objectives()
        labels, colors, controls, must_raise = {}, {}, {}, {}
        for name in objectives:
            cls = self.grid.objective_class(name)
            labels[name], colors[name] = cls.label, cls.color
            if cls.control is not None:
                controls[name] = cls.control
            if cls.must_raise_cmi_over:
                whom = {"start": cls.start_from, "control": cls.control}
                must_raise[name] = [whom.get(w, w) for w in cls.must_raise_cmi_over if whom.get(w, w)]
        methods = self.methods()
        if self.ce_baseline:
            methods = ["ce"] + [m for m in methods if m != "ce"]
        layout = {"pairs": [[p["teacher"], p["student"]] for p in self.pairs()], "methods": methods,
                  "objectives": objectives, "labels": labels, "colors": colors, "controls": controls,
                  "must_raise": must_raise, **self.extra_layout()}
        if self.teacher_checkpoint() == "best":  # only then (the layout is a table job's params)
            layout["teacher_checkpoint"] = "best"
        # only when set, so that the tables of configurations without them are unchanged (and not rerun)
        margin = (self.grid.config.get("tables") or {}).get("not_working_margin")
        if margin is not None:
            layout["not_working_margin"] = float(margin)
        if self.grid.config.get("dataset", {}).get("validation"):
            layout["evaluated_on"] = "validation"
        reference = self.grid.config.get("reference") or {}
        if reference:  # the paper's numbers for this experiment, its claims and our differences (mcmikd.references)
            layout["reference"] = {"metric": reference.get("metric", "best"),
                                   "entries": list((reference.get("experiments") or {}).get(self.name) or []),
                                   "notes": list(reference.get("notes") or []),
                                   "differences": list(reference.get("differences") or [])}
        return layout

    def report_note(self) -> str:
        """The table's description in the report: `note`, which teacher checkpoint its students used when it is the
        best-on-test one, and what the "CMI not raised" mark means where a compared objective must raise the CMI
        (`TeacherObjective.must_raise_cmi_over`)."""
        note = self.note
        if self.teacher_checkpoint() == "best":
            note = f"{note} {CHECKPOINT_NOTE}".strip()
        if self.grid.config.get("dataset", {}).get("validation"):
            note = (f"{note} Evaluated on VALIDATION data (``dataset.validation``): a held-out part of the training "
                    f"set; the test set was not used, so read \"test\" as \"validation\" here.").strip()
        if not any(self.grid.objective_class(o).must_raise_cmi_over for o in self.objectives()):
            return note
        return (f"{note} {CMI_NOT_RAISED_NOTE}").strip()

    def extra_layout(self) -> dict:
        return {}

    def figures(self) -> list[Figure]:
        return []

    def runs_file(self) -> str:
        return f"runs/{self.name}.csv"

    # ------------------------------------------------------------------ job time
    @classmethod
    def table(cls, runs, layout: dict, metric: str):
        """(long numbers frame, display frame) from the runs table; None for a kind without a table."""
        return None
