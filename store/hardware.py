"""What the machine can run, as both the server's and the trainer's vLLM engines see it.

Kept on the shared floor because the same choice (bf16 or float32 on this CPU) is made
by the service's serving engine and by the trainer's rollout engine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# CPU flags (x86 /proc/cpuinfo "flags", Arm "Features") under which vLLM's bf16 kernels run
# natively or on AVX-512; elsewhere (AVX2-only x86) its bf16 path is emulated and slow.
BF16_CPU_FLAGS = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first CPU's instruction-set flags; empty where /proc/cpuinfo is not readable."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_kind(flags: frozenset[str] | None = None) -> str:
    """A short name for the CPU's vector width, for benchmark output: avx512, avx2 or other."""
    have = cpu_flags() if flags is None else flags
    if "avx512f" in have:
        return "avx512" + ("+bf16" if "avx512_bf16" in have else "")
    return "avx2" if "avx2" in have else "other"


def choose_dtype(requested: str, *, cuda: bool, flags: frozenset[str]) -> tuple[str, str]:
    """(dtype for vLLM, why). An explicit dtype is kept. `auto` keeps vLLM's own choice
    (the model's bf16) on a GPU; on a CPU it takes bf16 only where the CPU has AVX-512
    or native bf16, else float32: on a 2-core AVX2-only EPYC, `loopchat bench serve`
    measured 9.4 tok/s in bf16 against 30.3 in float32 (docs/benchmarks.md)."""
    if requested != "auto":
        return requested, "set explicitly"
    if cuda:
        return "auto", "GPU: the model's own dtype"
    have = sorted(flags & BF16_CPU_FLAGS)
    if have:
        return "bfloat16", f"CPU with {', '.join(have)}"
    return "float32", "CPU without AVX-512 or native bf16: vLLM's bf16 is emulated there"


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None
