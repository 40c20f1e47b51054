"""Where a report was measured: latency and int8 speed mean little without the CPU and library versions.

Versions come from package metadata, never from importing the libraries, so describing the environment
stays cheap and cannot fail on a broken install.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "numpy", "torch", "onnx", "onnxruntime", "onnxscript", "onnxslim", "openvino",
    "ai-edge-litert", "litert-torch", "transformers",
)
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


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of `names`; packages that are not installed are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cpu_summary() -> dict:
    """The CPU model, its int8/bf16-relevant flags (None where /proc/cpuinfo is missing) and logical cores."""
    model, flags = parse_cpuinfo(read_cpuinfo(), CPU_FLAGS)
    return {"cpu_model": model or platform.processor() or None, "logical_cores": os.cpu_count(),
            "cpu_flags": flags}


def environment(threads: int) -> dict:
    """The machine and library versions a measurement ran on, as a JSON-ready dict."""
    cpu = cpu_summary()
    return {
        "cpu_model": cpu["cpu_model"],
        "logical_cores": cpu["logical_cores"],
        "threads": threads,
        "cpu_flags": cpu["cpu_flags"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
    }
