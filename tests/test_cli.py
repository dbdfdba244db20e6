"""The one command line, `mcmikd <command>` (src/mcmikd/__main__.py): every command a user runs by hand, each with
its own --help, the same through the installed script and `python -m mcmikd`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SCHEMA

COMMANDS = ["progress", "compare", "paired", "repair", "choose-weights", "train", "publish", "recipe", "bench",
            "config-docs"]
SCRIPT = Path(sys.executable).parent / "mcmikd"  # the console script pyproject.toml's [project.scripts] installs

# The keys of the workflow's own result files (rules train_teacher and train_student: mcmikd.jobs.teacher,
# mcmikd.jobs.student), as a finished run of the DAG writes them.
RESULT_KEYS = {"best_acc", "best_epoch", "confusion_best", "confusion_last", "history", "last_acc", "last_epoch",
               "per_class_acc_best", "per_class_acc_last", "provenance", "role", "seed", "steps", "stopped_early",
               "teacher", "test_cmi_last"}
TEACHER_KEYS = RESULT_KEYS | {"checkpoint", "collapse_reason", "collapsed", "model_acc", "model_epoch", "start_acc"}
STUDENT_KEYS = RESULT_KEYS | {"extra_params", "method", "num_train_visible", "reason", "setting", "status", "student",
                              "student_params", "teacher_checkpoint", "teacher_seed"}


def mcmikd(*args, cwd=ROOT, script=False):
    """Run `mcmikd ARGS` (the installed script with `script`, else `python -m mcmikd`) and return the process."""
    cmd = [str(SCRIPT)] if script else [sys.executable, "-m", "mcmikd"]
    return subprocess.run([*cmd, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------------------------- the command itself
@pytest.mark.parametrize("script", [True, False], ids=["mcmikd", "python -m mcmikd"])
def test_help_lists_every_command_in_order_with_a_description(script):
    if script and not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is not installed (pip install -e .)")
    for flag in ("--help", "-h"):
        out = mcmikd(flag, script=script)
        assert out.returncode == 0 and out.stderr == ""
        listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ")]
        assert listed == COMMANDS
        assert all(len(line.split(None, 1)) == 2 for line in out.stdout.splitlines() if line.startswith("  "))


def test_no_command_prints_the_usage_on_stderr_and_exits_2():
    out = mcmikd()
    assert out.returncode == 2 and out.stdout == "" and "commands:" in out.stderr and "choose-weights" in out.stderr


def test_an_unknown_command_is_one_line_naming_the_choices_and_exits_2():
    out = mcmikd("trian")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [f"mcmikd: unknown command 'trian' (choose from: {', '.join(COMMANDS)})"]


@pytest.mark.parametrize("args", [[c] for c in COMMANDS] + [["train", "teacher"], ["train", "student"]],
                         ids=" ".join)
def test_every_command_has_its_own_help(args):
    out = mcmikd(*args, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:") and out.stderr == ""
    if args[0] in ("repair", "choose-weights", "train", "bench", "config-docs"):  # parsers named `mcmikd <command>`
        assert out.stdout.startswith(f"usage: mcmikd {' '.join(args)}")


# --------------------------------------------------------------------------------------------- paired, choose-weights
def test_paired_prints_the_seed_paired_gains_of_a_committed_run():
    out = mcmikd("paired", "docs/results/digits/runs_main.csv", "--config", "config/digits-full.yaml")
    assert out.returncode == 0, out.stderr
    assert "| Pair | Setting | Framework | mcmi − mll |" in out.stdout
    assert "| resnet56 → resnet20 | full | KD |" in out.stdout


def test_choose_weights_writes_the_choice_and_the_old_script_is_the_same_command(tmp_path):
    table = ROOT / "docs" / "results" / "tune" / "method_weights.csv"
    out = mcmikd("choose-weights", table, "--out", tmp_path / "w.yaml", "--doc", tmp_path / "w.md")
    assert out.returncode == 0, out.stderr
    chosen = yaml.safe_load((tmp_path / "w.yaml").read_text())["methods"]
    assert chosen["kd"]["key"] == "alpha" and "kd: alpha x" in out.stdout
    assert out.stdout.splitlines() == [f"{m}: {c['key']} x{c['multiple']:g} = {c['value']}" for m, c in chosen.items()]
    assert "Procedure:" in (tmp_path / "w.md").read_text()
    old = subprocess.run([sys.executable, ROOT / "workflow" / "scripts" / "choose_method_weights.py", table,
                          "--out", tmp_path / "old.yaml"], capture_output=True, text=True, timeout=120)
    assert old.returncode == 0 and old.stdout == out.stdout
    assert (tmp_path / "old.yaml").read_text() == (tmp_path / "w.yaml").read_text()


# --------------------------------------------------------------------------------------------- repair
@pytest.fixture
def run_folder(tmp_path, monkeypatch):
    """A project folder whose results/tiny holds two recorded files (a teacher model, a result JSON), an
    unrecorded table and an epoch checkpoint; the working directory is the project folder."""
    from mcmikd.io import write_json, write_record

    teacher = tmp_path / "results" / "tiny" / "teachers" / "resnet8" / "mll" / "seed0"
    teacher.mkdir(parents=True)
    (teacher / "model.pt").write_bytes(b"model weights")
    write_record(teacher / "model.pt")
    write_json(teacher / "metrics.json", {"model_acc": 90.0})
    (teacher / ".model.resume.pt").write_bytes(b"half an epoch")  # an epoch checkpoint: no workflow output
    write_record(teacher / ".model.resume.pt")
    (teacher / ".model.resume.pt").write_bytes(b"half an epocH")
    (tmp_path / "results" / "tiny" / "tables").mkdir()
    (tmp_path / "results" / "tiny" / "tables" / "main.csv").write_text("a,b\n")
    monkeypatch.chdir(tmp_path)
    return Path("results/tiny/teachers/resnet8/mll/seed0")


def test_repair_lists_exactly_the_corrupted_file_and_the_forcerun_line_that_rebuilds_it(run_folder, capsys):
    from mcmikd.cli import repair_main

    (run_folder / "model.pt").write_bytes(b"model weightz")  # same size, other bytes
    assert repair_main(["results/tiny", "--configfile", "config/tiny.yaml"]) == 1
    lines = capsys.readouterr().out.splitlines()
    model = f"{run_folder}/model.pt"
    assert lines[0] == f"{model}: its sha256 is not the one recorded when it was written"
    assert not any("metrics.json" in line or "resume" in line for line in lines)
    assert lines[-1] == f"snakemake --configfile config/tiny.yaml --forcerun {model}"

    assert repair_main(["results/tiny", "--forcerun-only"]) == 1
    assert capsys.readouterr().out == f"--forcerun {model}\n"


def test_repair_names_a_missing_recorded_file_and_quotes_paths_for_the_shell(run_folder, capsys):
    from mcmikd.cli import repair_main

    (run_folder / "metrics.json").unlink()
    assert repair_main([str(Path.cwd() / "results" / "tiny"), "--configfile", "my config.yaml"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{run_folder}/metrics.json: missing, but .metrics.json.sha256 records that it was written"
    assert out[-1] == f"snakemake --configfile 'my config.yaml' --forcerun {run_folder}/metrics.json"


def test_repair_of_an_intact_run_says_so_and_exits_0(run_folder, capsys):
    from mcmikd.cli import repair_main

    assert repair_main(["results/tiny"]) == 0
    assert capsys.readouterr().out.startswith("no damaged files under results/tiny")
    assert repair_main(["results/tiny", "--forcerun-only"]) == 0 and capsys.readouterr().out == ""


def test_repair_of_a_folder_that_is_not_there_is_one_line_and_exit_2(tmp_path):
    out = mcmikd("repair", tmp_path / "nothing")
    assert out.returncode == 2 and out.stderr.splitlines() == [f"mcmikd repair: {tmp_path / 'nothing'} is not a folder"]


# --------------------------------------------------------------------------------------------- bench
def test_bench_lists_every_script_with_its_first_docstring_line():
    out = mcmikd("bench")
    assert out.returncode == 0, out.stderr
    for script in sorted((ROOT / "bench").glob("*.py")):
        assert f"  {script.stem} " in out.stdout
    assert "Seconds per training epoch of distillation methods on digits" in out.stdout


def test_bench_runs_the_script_with_its_arguments_and_refuses_unknown_names():
    out = mcmikd("bench", "method_epoch", "--help")
    assert out.returncode == 0 and "--methods" in out.stdout
    out = mcmikd("bench", "nosuch")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and "choose from:" in out.stderr


def test_bench_outside_a_checkout_is_one_line_and_exit_2(tmp_path, capsys):
    from mcmikd.cli import bench_main

    assert bench_main([], root=tmp_path) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "checkout" in err


# --------------------------------------------------------------------------------------------- config-docs
def test_config_docs_writes_config_readme_and_check_says_in_one_line_when_it_is_stale(tmp_path):
    import shutil

    for rel in ("workflow/schemas/config.schema.yaml", "tests/tiny.yaml",
                *(p.relative_to(ROOT).as_posix() for p in (ROOT / "config").glob("*.yaml"))):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, tmp_path / rel)
    (tmp_path / "config" / "README.md").write_text("hand-written\n")
    out = mcmikd("config-docs", "--check", "--root", tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.splitlines() == [f"mcmikd config-docs: {tmp_path / 'config' / 'README.md'} is stale; run "
                                       f"`mcmikd config-docs` to regenerate it"]
    assert (tmp_path / "config" / "README.md").read_text() == "hand-written\n"  # --check writes nothing
    out = mcmikd("config-docs", "--root", tmp_path)
    assert out.returncode == 0 and out.stdout == f"wrote {tmp_path / 'config' / 'README.md'}\n"
    # the same sources give the committed page, byte for byte
    assert (tmp_path / "config" / "README.md").read_text() == (ROOT / "config" / "README.md").read_text()
    out = mcmikd("config-docs", "--check", "--root", tmp_path)
    assert out.returncode == 0 and out.stderr == ""
    out = mcmikd("config-docs", "--check", "--root", tmp_path / "config")  # no schema there: not a checkout
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and "checkout" in out.stderr


# --------------------------------------------------------------------------------------------- train
@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """tests/tiny.yaml with one-epoch teachers (its students train one epoch already)."""
    cfg = yaml.safe_load((ROOT / "tests" / "tiny.yaml").read_text())
    cfg["teachers"]["training"].update(epochs=1, milestones=[])
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def teacher(tiny_config, tmp_path_factory):
    """The folder of an MLL teacher trained by `mcmikd train teacher`, and the command's output."""
    out_dir = tmp_path_factory.mktemp("teacher")
    out = mcmikd("train", "teacher", "--config", tiny_config, "--arch", "resnet8", "--objective", "mll",
                 "--seed", 0, "--out", out_dir)
    assert out.returncode == 0, out.stderr
    return out_dir, out


def grid_of(config):
    from mcmikd.config import load_grid

    return load_grid(yaml.safe_load(Path(config).read_text()), SCHEMA)


def test_train_teacher_writes_what_the_train_teacher_job_writes(teacher, tiny_config):
    from mcmikd.io import verify_file

    out_dir, out = teacher
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert set(metrics) == TEACHER_KEYS
    assert metrics["role"] == "teacher" and metrics["teacher"]["variant"] == "mll" and len(metrics["history"]) == 1
    # the params are the slice the rule passes to the job
    assert metrics["provenance"]["config"] == grid_of(tiny_config).teacher_params("resnet8", "mll", 0)
    for name in ("model.pt", "metrics.json", "data.pt"):
        verify_file(out_dir / name)  # written with their content records
    assert out.stdout.splitlines()[-1] == (f"teacher resnet8/mll: {metrics['model_acc']:.2f}%; "
                                           f"wrote {out_dir / 'metrics.json'}")


def test_train_student_distils_from_a_trained_teacher_as_the_train_student_job(teacher, tiny_config, tmp_path):
    from mcmikd.config import StudentRun

    out = mcmikd("train", "student", "--config", tiny_config, "--student", "resnet8", "--method", "kd",
                 "--teacher", teacher[0], "--seed", 0, "--out", tmp_path, "--data", teacher[0] / "data.pt")
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "seed0.json").read_text())
    assert set(result) == STUDENT_KEYS
    assert result["status"] == "ok" and result["teacher_seed"] == 0
    assert result["teacher_checkpoint"]["file"] == "model.pt"
    run = StudentRun("resnet8", "mll", "resnet8", "kd", "full", 0)
    assert result["provenance"]["config"] == grid_of(tiny_config).student_params(run)
    assert not (tmp_path / "data.pt").exists()  # --data: the teacher's prepared dataset, not a new one


def test_train_refuses_a_student_and_teacher_the_workflow_never_pairs(tiny_config, tmp_path):
    out = mcmikd("train", "student", "--config", tiny_config, "--student", "resnet8", "--method", "kd",
                 "--teacher", "none", "--seed", 0, "--out", tmp_path)
    assert out.returncode == 1 and out.stderr.splitlines() == [
        "Error: method kd distils from a teacher: give its folder with --teacher"]
    out = mcmikd("train", "teacher", "--config", tiny_config, "--arch", "resnet8", "--objective", "mcmi",
                 "--seed", 0, "--out", tmp_path)
    assert out.returncode == 1 and "--start" in out.stderr and len(out.stderr.splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written
