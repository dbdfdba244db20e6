"""Which CPU kernels computed a number: the machine fingerprint recorded in every result's provenance.

Float results on the CPU depend on more than the seed: PyTorch (ATen), oneDNN and MKL each pick kernels by the CPU
they run on, and each kernel rounds in its own order. The same code, seed and thread count therefore give the same
bits on one machine and other bits on another CPU (or on the same CPU with another kernel set forced through the
environment: ``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_CBWR``, ...). `fingerprint()` names what decides
those bits, so that a disagreement between two runs can be traced to it, and tests know whether a number recorded
elsewhere can be expected bit for bit (same fingerprint) or only within a stated tolerance (another one).
"""

from __future__ import annotations

import os
import platform

# environment variables that change which CPU kernels run (hence the float bits)
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform.processor()); '' when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> tuple[str, ...]:
    """The vector-instruction flags of the CPU that kernel libraries dispatch on (avx*, amx*, sse4*, fma); () when
    unknown (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("flags", "features")):
                    return tuple(sorted(f for f in line.split(":", 1)[1].split()
                                        if f.startswith(("avx", "amx", "sse4", "fma", "asimd", "sve"))))
    except OSError:
        pass
    return ()


def fingerprint(threads: int | None = None) -> dict:
    """What decides the float bits of a CPU computation here: the CPU model and its vector flags, the kernel set
    torch's ATen dispatches to (`torch.backends.cpu.get_cpu_capability()`: e.g. AVX512, AVX2, DEFAULT), the
    kernel-selecting environment variables that are set, the torch version and the thread count (default: torch's
    current). Two runs of the same code and seed with equal fingerprints give equal bits on the CPU."""
    import torch

    return {"cpu": cpu_model(), "cpu_flags": " ".join(cpu_flags()), "machine": platform.machine(),
            "aten_capability": torch.backends.cpu.get_cpu_capability(),
            "kernel_env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
            "torch": torch.__version__, "threads": torch.get_num_threads() if threads is None else threads}


def describe(fp: dict) -> str:
    """One line for a fingerprint: CPU, ATen kernel set and the environment that forced kernels."""
    env = " ".join(f"{k}={v}" for k, v in sorted((fp.get("kernel_env") or {}).items()))
    return f"{fp.get('cpu') or '?'}, ATen {fp.get('aten_capability') or '?'}" + (f", {env}" if env else "")
