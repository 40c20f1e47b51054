"""The CPU this runs on, from /proc/cpuinfo: its model name and the instruction sets that decide which
precision runs fast. One reader for the report, the hardware plan and the quantizers."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Instruction sets that decide whether int8 kernels beat fp32 ones on x86.
INT8_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")
# What a report records: the int8 ones plus AMX's int8/bf16 units and AVX-512 bf16 (fast bf16 matmuls).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
             "amx_bf16", "amx_fp16")

_CPUINFO = Path("/proc/cpuinfo")


def read_cpuinfo(path: Path = _CPUINFO) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def parse_cpuinfo(text: str,
                  names: tuple[str, ...] = INT8_CPU_FLAGS) -> tuple[str | None, dict[str, bool] | None]:
    """CPU model name and the flags `names` (default: the int8-relevant ones) from /proc/cpuinfo text.

    None where not listed.
    """
    model = None
    flags = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip() or None
        elif key == "flags" and flags is None:
            present = set(value.split())
            flags = {name: name in present for name in names}
        if model is not None and flags is not None:
            break
    return model, flags


def cpu_summary() -> dict:
    """The CPU model, its int8/bf16-relevant flags (None where /proc/cpuinfo is missing) and logical cores."""
    model, flags = parse_cpuinfo(read_cpuinfo(), CPU_FLAGS)
    return {"cpu_model": model or platform.processor() or None, "logical_cores": os.cpu_count(),
            "cpu_flags": flags}
