"""Where a report was measured: latency and int8 speed mean little without the CPU and library versions.

Versions come from package metadata, never from importing the libraries, so describing the environment
stays cheap and cannot fail on a broken install.
"""

from __future__ import annotations

import platform
from importlib import metadata

from slimkit.cpu import CPU_FLAGS, INT8_CPU_FLAGS, cpu_summary, parse_cpuinfo, read_cpuinfo

PACKAGES = (
    "numpy", "torch", "onnx", "onnxruntime", "onnxscript", "onnxslim", "openvino",
    "ai-edge-litert", "litert-torch", "transformers",
)
def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of `names`; packages that are not installed are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


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


__all__ = ["CPU_FLAGS", "INT8_CPU_FLAGS", "cpu_summary", "environment", "package_versions", "parse_cpuinfo",
           "read_cpuinfo"]
