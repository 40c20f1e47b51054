"""The machine a benchmark ran on: CPU model, its int8/bf16-relevant instruction sets, core count.

Int8 and bf16 speed-ups depend on these (VNNI, AVX-512 BF16, AMX), so every benchmark prints them first
and every RESULTS.md section names them. Read from /proc/cpuinfo via `slimkit.report.environment`.

    .venv/bin/python benchmarks/machine.py
"""

from __future__ import annotations

from slimkit.report.environment import CPU_FLAGS, cpu_summary


def machine() -> dict:
    """{"cpu_model", "logical_cores", "cpu_flags": {flag: bool} (None where /proc/cpuinfo is missing)}."""
    return cpu_summary()


def describe(info: dict | None = None) -> str:
    """One line, e.g. `CPU: AMD EPYC 9B14, 2 logical cores; has avx2 avx512f ...; lacks amx_tile ...`."""
    info = info or machine()
    flags = info.get("cpu_flags")
    line = f"CPU: {info.get('cpu_model') or 'unknown model'}, {info.get('logical_cores')} logical cores"
    if flags is None:
        return line + f"; flags unknown (no /proc/cpuinfo): {', '.join(CPU_FLAGS)}"
    has = [name for name in CPU_FLAGS if flags.get(name)]
    lacks = [name for name in CPU_FLAGS if not flags.get(name)]
    return line + f"; has {' '.join(has) or 'none of them'}; lacks {' '.join(lacks) or 'none'}"


def print_machine() -> dict:
    info = machine()
    print(describe(info), flush=True)
    return info


if __name__ == "__main__":
    print_machine()
