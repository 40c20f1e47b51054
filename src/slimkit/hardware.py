"""What this CPU runs natively, and what slimkit does with it.

The fastest precision and runtime differ between machines (AMX or AVX-512 BF16 make OpenVINO's bf16 fast;
VNNI makes int8 fast; plain AVX2 has neither), and the machines this project runs on change. So choices are
made here from the hardware as the runtime itself reports it (OpenVINO's OPTIMIZATION_CAPABILITIES) and
/proc/cpuinfo, never hard-coded, and the reports measure the outcome.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Literal

from slimkit.cpu import cpu_summary
from slimkit.errors import require

OpenVinoPrecision = Literal["auto", "f32", "bf16", "f16"]
PRECISIONS = ("f32", "bf16", "f16")


def import_openvino():
    """Import OpenVINO with its usage telemetry switched off (it would try to reach the network)."""
    os.environ.setdefault("OPENVINO_TELEMETRY_ENABLE", "0")
    sys.modules.setdefault("openvino_telemetry", None)  # makes OpenVINO's optional import fail -> stub
    return require("openvino", "openvino")


@functools.cache
def openvino_capabilities() -> tuple[str, ...] | None:
    """OpenVINO's own list of what its CPU plugin runs natively ('FP32', 'BF16', 'FP16', 'INT8', ...); None when
    OpenVINO is not installed."""
    try:
        ov = import_openvino()
    except Exception:  # the openvino extra is optional
        return None
    return tuple(str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def native_openvino_precisions() -> list[str]:
    """Inference precisions OpenVINO's CPU plugin runs in hardware here: f32 always, bf16 / f16 where listed."""
    caps = openvino_capabilities() or ()
    return ["f32"] + [p for p, cap in (("bf16", "BF16"), ("f16", "FP16")) if cap in caps]


def resolve_openvino_precision(requested: str) -> tuple[str, str]:
    """(precision to run at, why). `auto` takes bf16 where the CPU runs it natively (AMX / AVX-512 BF16: about
    2-4x the f32 matmul rate, with f32's range), else f32. A precision the CPU would only emulate falls back to
    f32, and the reason says so."""
    native = native_openvino_precisions()
    if requested == "auto":
        if "bf16" in native:
            return "bf16", "auto: the CPU runs bf16 natively (OpenVINO lists BF16), the fastest faithful choice"
        return "f32", "auto: the CPU has no native bf16 or f16 (OpenVINO lists neither), so f32"
    if requested not in PRECISIONS:
        raise ValueError(f"unknown OpenVINO precision {requested!r}")
    if requested in native:
        return requested, f"{requested} as asked; the CPU runs it natively"
    return "f32", (f"{requested} was asked for but this CPU has no native {requested} (OpenVINO lists "
                   f"{', '.join(openvino_capabilities() or ['nothing'])}), so f32")


def int8_kernels() -> str:
    """Which int8 matmul kernels the CPU offers ONNX Runtime and OpenVINO."""
    flags = cpu_summary().get("cpu_flags") or {}
    if flags.get("amx_int8"):
        return "AMX int8 tiles (fastest int8)"
    if flags.get("avx512_vnni") or flags.get("avx_vnni"):
        return "VNNI dot products (u8 x s8 without saturation)"
    if flags.get("avx2"):
        return "AVX2 only (u8 x s8 can saturate: weights use 7 bits in ONNX Runtime)"
    return "no x86 SIMD int8 kernels known"


def hardware_plan() -> dict:
    """The CPU features that matter and what slimkit does with them (shown by `slimkit inspect`)."""
    cpu = cpu_summary()
    ov_precision, ov_reason = resolve_openvino_precision("auto")
    return {
        "cpu_model": cpu.get("cpu_model"),
        "logical_cores": cpu.get("logical_cores"),
        "cpu_flags": cpu.get("cpu_flags"),
        "openvino_capabilities": list(openvino_capabilities() or []),
        "openvino_precision": ov_precision,
        "openvino_precision_reason": ov_reason,
        "int8_kernels": int8_kernels(),
    }
