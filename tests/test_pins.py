"""Numbers recorded on one machine are checked bit for bit only on that machine's kernels and within a stated
kernel-drift tolerance elsewhere (`tests/pins.py`); the tolerance still refuses a run that behaves differently."""

import json
import os
import subprocess
import sys

import pytest

import pins
from conftest import ROOT

# training numbers: run again under another CPU kernel set by `make test-kernels`
pytestmark = pytest.mark.numeric


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """The pinned runs are recorded with one torch thread (conftest.one_torch_thread)."""


@pytest.mark.parametrize("file", list(pins.PINNED))
def test_the_tolerance_refuses_every_pinned_run_trained_with_another_seed(file):
    """A change of seed moves every pinned run by far more than kernel drift (tests/recorded/drift.md): the
    tolerance check that runs on other machines would catch it."""
    mod, cases = pins._cases(file)
    recorded = pins.load(file)["cases"]
    assert sorted(recorded) == sorted(cases)
    for case in cases:
        history, digest = mod.pinned(case, seed=1)
        assert digest != recorded[case]["digest"]
        assert pins.mismatches(pins.flatten(history), recorded[case]["values"]), case


def test_mismatches_name_each_value_outside_its_tolerance():
    rec = {"main1.train.kd": 2.0, "main1.test_acc": 50.0, "main1.test_cmi": 0.1}
    assert pins.mismatches({"main1.train.kd": 2.03, "main1.test_acc": 52.9, "main1.test_cmi": 0.109}, rec) == []
    bad = pins.mismatches({"main1.train.kd": 2.05, "main1.test_acc": 53.5, "main1.test_cmi": float("nan")}, rec)
    assert [b.split(":")[0] for b in bad] == ["main1.test_acc", "main1.test_cmi", "main1.train.kd"]
    assert pins.mismatches({"main1.train.kd": 2.0}, {"main1.train.kd": 2.0, "main2.train.kd": 1.0}) == [
        "main2.train.kd: missing (recorded 1.0)"]


def test_a_forced_kernel_set_changes_the_fingerprint_and_nothing_else_does():
    """The fingerprint sees what changes the bits (here ATen's kernel set), so a run under another kernel set is
    checked with the tolerance, not the digest; the same environment gives the same fingerprint."""
    code = "import json, torch; torch.set_num_threads(1); from mcmikd.machine import fingerprint; " \
           "print(json.dumps(fingerprint()))"
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}

    def fp(**extra):
        return json.loads(subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True,
                                         text=True, check=True, cwd=ROOT).stdout)

    forced, native = fp(ATEN_CPU_CAPABILITY="default"), fp()
    assert forced["aten_capability"] == "DEFAULT" and forced["kernel_env"]["ATEN_CPU_CAPABILITY"] == "default"
    assert "ATEN_CPU_CAPABILITY" not in native["kernel_env"]
    assert not pins.same_kernels(forced, native)
    assert pins.same_kernels(native, fp())
