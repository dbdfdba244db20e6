"""Content records of intermediate files: written with the file, checked by every reader, and found at parse time
(mcmikd.repair) when a recorded file is missing or does not match. End to end: tests/test_damaged.py."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from mcmikd.data import DatasetTensors
from mcmikd.engine import Runtime
from mcmikd.errors import DamagedFileError
from mcmikd.io import read_json, read_record, record_path, torch_save, verify_file, write_json
from mcmikd.jobs.common import load_model, save_model
from mcmikd.models import create_model
from mcmikd.repair import damaged_files, plan_repair


def truncate(path, keep=100):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def flip_byte_keep_mtime(path, at=None):
    """Same size, same mtime, one byte different: what only a full sha256 sees."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def advice(path):
    return f"repair it with `snakemake --forcerun {path}` plus the options you ran the workflow with"


def test_torch_save_records_the_file_it_wrote(tmp_path):
    path = tmp_path / "x.pt"
    torch_save({"a": torch.arange(10)}, path)
    record = read_record(path)
    assert record_path(path).name == ".x.pt.sha256"
    assert record["size"] == path.stat().st_size and len(record["sha256"]) == 64
    verify_file(path)  # matches
    assert damaged_files([str(path)]) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.pt.sha256", "x.pt"]  # no temporary left


def test_a_truncated_data_file_is_one_line_naming_it_and_the_repair(tmp_path):
    path = tmp_path / "data.pt"
    DatasetTensors("d", torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long),
                   torch.zeros(1, 1, 4, 4, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), (0.5,), (0.5,),
                   ["a"], False).to_file(path)
    size = path.stat().st_size
    truncate(path)
    with pytest.raises(DamagedFileError) as err:
        DatasetTensors.from_file(path)
    message = str(err.value)
    assert "\n" not in message
    assert message == f"{path} is damaged (100 bytes, {size} when written); {advice(path)} (--configfile, --profile)"


def test_a_model_with_one_byte_changed_is_refused_by_its_reader(tmp_path):
    path = tmp_path / "model.pt"
    save_model(create_model("resnet8", 10, 1), path, num_classes=10, in_channels=1)
    flip_byte_keep_mtime(path)
    with pytest.raises(DamagedFileError, match=r"is damaged \(its sha256 is not the one recorded"):
        load_model(path, Runtime.from_config({"device": "cpu", "threads": 1}))
    # the parse-time check sees it only within its hashing budget (else it checks the size only)
    assert list(damaged_files([str(path)])) == [str(path)]
    assert damaged_files([str(path)], hash_budget=path.stat().st_size - 1) == {}


def test_an_unrecorded_unreadable_file_gets_the_same_advice(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(DamagedFileError, match=r"is damaged \(unreadable: .*\); repair it with `snakemake"):
        load_model(path, Runtime.from_config({"device": "cpu", "threads": 1}))
    assert damaged_files([str(path)]) == {}  # no record, nothing to compare at parse time


def test_missing_recorded_files_and_bad_records_are_damaged(tmp_path):
    kept, gone, bad = (tmp_path / f"{n}.pt" for n in ("kept", "gone", "bad"))
    for path in (kept, gone, bad):
        torch_save([1, 2, 3], path)
    gone.unlink()
    record_path(bad).write_text("{")
    found = damaged_files([str(kept), str(gone), str(bad), str(tmp_path / "never-written.pt")])
    assert set(found) == {str(gone), str(bad)}
    assert found[str(gone)] == "missing, but .gone.pt.sha256 records that it was written"
    assert found[str(bad)].startswith(f"its record {record_path(bad)} is unreadable")


def test_truncated_json_is_one_line_naming_it_and_the_repair(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"model_acc": 97.5, "history": [1, 2, 3]}, record=False)  # a file without a record
    truncate(path, keep=20)
    with pytest.raises(DamagedFileError) as err:
        read_json(path)
    assert str(err.value).startswith(f"{path} is damaged (not valid JSON: ") and advice(path) in str(err.value)


def test_a_result_edited_after_its_job_wrote_it_is_damaged(tmp_path):
    """Result JSONs carry a content record: an edit (47.78 → 70.33, same length) never reaches a table."""
    path = tmp_path / "seed0.json"
    write_json(path, {"last_acc": 47.78})
    assert read_json(path) == {"last_acc": 47.78}
    path.write_text(path.read_text().replace("47.78", "70.33"))
    with pytest.raises(DamagedFileError) as err:
        read_json(path)
    assert str(err.value).startswith(f"{path} is damaged (its sha256 is not the one recorded when it was written)")
    assert "\n" not in str(err.value) and advice(path) in str(err.value)


def test_a_resume_checkpoint_with_a_flipped_byte_is_ignored_and_training_starts_afresh(tmp_path, capsys):
    from mcmikd.engine import ResumeFile

    resume = ResumeFile(tmp_path / ".seed0.resume.pt", "abc")
    resume.save({"epoch": 3})
    assert resume.load()["epoch"] == 3 and read_record(tmp_path / ".seed0.resume.pt") is not None
    data = bytearray((tmp_path / ".seed0.resume.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / ".seed0.resume.pt").write_bytes(bytes(data))
    assert resume.load() is None
    assert "ignoring damaged checkpoint" in capsys.readouterr().err
    resume.clear()
    assert not (tmp_path / ".seed0.resume.pt").exists() and read_record(tmp_path / ".seed0.resume.pt") is None


@dataclass
class FakeSettings:
    """The two fields of Snakemake's DAGSettings the repair reads."""
    forcerun: set = field(default_factory=set)
    forceall: bool = False


def test_a_missing_file_is_requested_and_a_damaged_one_needs_forcing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("data.pt").write_bytes(b"x")
    damaged = {"data.pt": "1 bytes, recorded 9", "model.pt": "missing"}
    producers = {"data.pt": "prepare_data", "model.pt": "train_teacher"}
    with pytest.raises(DamagedFileError, match=r"^a recorded intermediate file is damaged \(data.pt: 1 bytes, "
                                               r"recorded 9\); rebuild it and every job that reads it with "
                                               r"`snakemake --forcerun data.pt` plus the options"):
        plan_repair(damaged, producers, FakeSettings())
    with pytest.raises(DamagedFileError, match="data.pt"):
        plan_repair(damaged, producers, None)  # no settings: nothing counts as forced
    for settings in (FakeSettings({"data.pt"}), FakeSettings({"prepare_data"}), FakeSettings(forceall=True)):
        missing, warnings = plan_repair(damaged, producers, settings)
        assert missing == ["model.pt"]
        assert warnings == [f"Warning: {p} is damaged ({r}); it is rebuilt and every job that reads it reruns"
                            for p, r in damaged.items()]
    assert plan_repair({}, producers, FakeSettings()) == ([], [])


def test_two_damaged_files_are_one_line_with_one_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a b.pt", "c.pt"):
        Path(name).write_bytes(b"x")
    with pytest.raises(DamagedFileError, match=r"^2 recorded intermediate files are damaged \(a b.pt: r1; c.pt: r2\); "
                                               r"rebuild them and every job that reads them with `snakemake "
                                               r"--forcerun 'a b.pt' c.pt`"):
        plan_repair({"a b.pt": "r1", "c.pt": "r2"}, {}, FakeSettings({"train_teacher"}))


def test_no_job_imports_the_parse_time_repair():
    """Editing mcmikd/repair.py (run at parse time only) reruns no job; the records' code (mcmikd/io.py) is in all."""
    from conftest import ROOT
    from mcmikd.codedeps import code_inputs

    for script in (ROOT / "workflow" / "scripts").glob("[a-z]*.py"):
        files = {Path(f).name for f in code_inputs(str(script), base=ROOT / "src")}
        assert "repair.py" not in files and "io.py" in files, script.name
