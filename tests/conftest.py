import copy
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def default_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.fixture
def load(default_config):
    """Validate a modified copy of the default config and return its grid."""
    from mcmikd.config import load_grid

    def _load(mutate=None):
        cfg = copy.deepcopy(default_config)
        if mutate:
            mutate(cfg)
        return load_grid(cfg, SCHEMA)

    return _load


def random_dataset(n: int, size: int = 8, n_test: int = 16):
    """A hand-made 4-class dataset (`DatasetTensors`) of `n` random 1-channel `size`-px images from a generator seeded
    0, labels 0, 1, 2, 3, 0, ...; the first `n_test` training images are the test set."""
    import torch

    from mcmikd.data import DatasetTensors

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 4
    images = (torch.rand(n, 1, size, size, generator=g) * 255).to(torch.uint8)
    return DatasetTensors(name="tiny", train_images=images, train_labels=labels, test_images=images[:n_test],
                          test_labels=labels[:n_test], mean=(0.5,), std=(0.25,), class_names=list("abcd"), hflip=False)


def assert_tiny_outputs_exist(results: Path) -> None:
    """Every table (CSV, Markdown, LaTeX) and figure (PNG, PDF) of a finished run of tests/tiny.yaml is non-empty, and
    so are the run's reading and the report's first page (rule reading)."""
    for exp in ("main", "fewshot", "zeroshot", "temperature"):
        for ext in ("csv", "md", "tex"):
            assert (results / "tables" / f"{exp}.{ext}").stat().st_size > 0
    for fig in ("main_delta", "fewshot", "zeroshot_bars", "zeroshot_confusion", "zeroshot_tsne_omit3", "temperature",
                "teachers_finetuning", "cam_resnet8"):
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{fig}.{ext}").stat().st_size > 1000
    for page in ("reading", "first_page"):
        assert "The run's reading." in (results / "report" / f"{page}.rst").read_text()


MARK = "marker: mcmikd from the project copy"


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def reverse_every_mapping(value):
    """`value` with the keys of every mapping in reverse order (what an editor's YAML formatter may do)."""
    if isinstance(value, dict):
        return {k: reverse_every_mapping(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reverse_every_mapping(v) for v in value]
    return value


def small_grid(c):
    """The tiny config's main experiment only, one teacher and one student seed (every job kind but CAM and the
    other experiments' students)."""
    c["teachers"]["seeds"] = [0]
    c["students"]["seeds"] = [0]
    c["experiments"]["main"]["methods"] = ["kd"]
    for name in ("fewshot", "zeroshot", "temperature", "cam"):
        c["experiments"][name]["enabled"] = False


@pytest.fixture(scope="session")
def small_project(tmp_path_factory):
    """A finished tiny run in its own project directory (work dir == workflow dir), run with the original
    checkout's package first on PYTHONPATH (as an editable install of a second clone would be). Shared by the
    checkout and damaged-file tests, which only read it or work on a `cp -a` copy of it. Built once per test session
    even on several xdist workers: the first worker builds it under the session's shared temporary folder, the others
    wait on a lock and reuse it (pytest-xdist's documented pattern for session fixtures)."""
    import fcntl
    import json
    import os

    from test_workflow import Workspace, copy_workflow, snakemake, write_config

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's folder, above every worker's own
    record = shared / "small_project.json"
    with open(shared / "small_project.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if record.exists():
            done = json.loads(record.read_text())
            return Path(done["proj"]), done["log"], done["commit"]
        base = shared / "small_project"
        proj = copy_workflow(base / "proj")
        pkg = proj / "src" / "mcmikd"
        # parse time imports mcmikd.config, onstart imports mcmikd.checks: both say which file they came from
        append(pkg / "config.py", f'\nimport sys as _sys\nprint("{MARK} (parse)", __file__, file=_sys.stderr)\n')
        append(pkg / "checks.py", f'\nimport sys as _sys\nprint("{MARK} (preflight)", __file__, file=_sys.stderr)\n')
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
        subprocess.run([*git, "init", "-q"], cwd=proj, check=True)
        subprocess.run([*git, "add", "-A"], cwd=proj, check=True)
        subprocess.run([*git, "commit", "-qm", "copy"], cwd=proj, check=True)
        write_config(proj, small_grid)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PYTHONPATH", str(ROOT / "src"))  # the foreign mcmikd, ahead of everything else
            out = snakemake(Workspace(work=proj, repo=proj))
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=proj, capture_output=True, text=True).stdout.strip()
        record.write_text(json.dumps({"proj": str(proj), "log": out.stdout + out.stderr, "commit": commit}))
        return proj, out.stdout + out.stderr, commit


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch thread (training numbers pinned by tests depend on the thread count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Running the suite on several processes (`make test` uses pytest-xdist's `-n 2 --dist loadfile`: each test file runs
# on one worker, so its module fixtures are built once). Slow files are collected first, the longest of them,
# tests/test_workflow.py, first of all, so that no long file is left for the end. The checkout and damaged-file
# tests share `small_project`, which is built once per session whichever workers run them (see the fixture).
def pytest_collection_modifyitems(config, items):
    import os

    if os.environ.get("PYTEST_XDIST_WORKER") or getattr(config.option, "numprocesses", None):
        # longest first (the order files are handed to free workers): the end-to-end workflow file, the other slow
        # files, the rest; stable, file order kept otherwise
        items.sort(key=lambda item: (item.get_closest_marker("slow") is None, item.path.name != "test_workflow.py"))


def pytest_configure(config):
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):  # one torch thread per worker process: the workers share the cores
        import torch

        torch.set_num_threads(1)

