"""Result files are strict JSON: non-finite floats are written as null, finite data exactly as before."""

import json

import numpy as np
import pytest
import torch

from mcmikd.io import read_json, write_json


def _strict_load(text):
    def refuse(name):
        raise AssertionError(f"bare {name} in a result file")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_are_written_as_null_everywhere(tmp_path):
    path = tmp_path / "m.json"
    nan, inf = float("nan"), float("inf")
    write_json(path, {"loss": nan, "curve": [1.5, inf, (2, -inf)], "nested": {"a": [{"b": nan}]},
                      "tensor": torch.tensor([1.0, nan]), "array": np.array([inf, 0.5]),
                      "np32": np.float32("nan"), "np64": np.float64(-inf), "ok": np.float64(2.5), "n": np.int64(3)})
    loaded = _strict_load(path.read_text())
    assert loaded == {"loss": None, "curve": [1.5, None, [2, None]], "nested": {"a": [{"b": None}]},
                      "tensor": [1.0, None], "array": [None, 0.5], "np32": None, "np64": None, "ok": 2.5, "n": 3}
    assert read_json(path) == loaded


def test_finite_data_is_written_exactly_as_before(tmp_path):
    data = {"acc": 97.3333333333, "history": [{"train": {"ce": 0.1 + 0.2, "tiny": 5e-324}, "epoch": 1}],
            "path": None, "flag": True, "big": 1e308, "t": (1, 2)}
    write_json(tmp_path / "a.json", data)
    assert (tmp_path / "a.json").read_text() == json.dumps(data, indent=1) + "\n"


def test_objects_json_cannot_serialise_are_still_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot serialise object"):
        write_json(tmp_path / "x.json", {"x": object()})
    assert not (tmp_path / "x.json").exists()


# Tests run as root, where a chmod-ed read-only folder still accepts writes; the file system's refusal is
# simulated by making the call that would fail (creating the temporary file, or renaming it) raise as it would.
@pytest.mark.parametrize("call", ["mkstemp", "replace"])
def test_a_refused_write_is_one_line_naming_the_file_and_the_folder(tmp_path, monkeypatch, call):
    import os
    import tempfile

    from mcmikd.errors import McmiError, OutputError

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile if call == "mkstemp" else os, call, refuse)
    out = tmp_path / "results" / "m.json"
    with pytest.raises(OutputError) as info:
        write_json(out, {"a": 1})
    assert isinstance(info.value, McmiError) and isinstance(info.value, OSError)
    assert str(info.value) == (f"cannot write {out} (Permission denied); make {out.parent} writable or choose "
                               f"another name")
    assert "\n" not in str(info.value) and not out.exists()
    assert not list(out.parent.glob(".*.tmp"))  # nothing half-written left behind


def test_a_folder_that_cannot_be_made_is_named_by_its_nearest_existing_parent(tmp_path, monkeypatch):
    from pathlib import Path

    from mcmikd.errors import OutputError

    def refuse(self, *args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(OutputError, match=f"cannot write {tmp_path}/a/b/m.json \\(Read-only file system\\); "
                                          f"make {tmp_path} writable"):
        write_json(tmp_path / "a" / "b" / "m.json", {})
