"""Model file formats: one module each (kind, suffixes, loader, runner, writer, converter), one registry."""

from slimkit.formats.loading import load
from slimkit.formats.registry import (
    Format,
    LoadOptions,
    Retarget,
    Runner,
    all_formats,
    artifact_filename,
    bench_runtimes,
    convert_targets,
    format_named,
    format_of_kind,
    make_runner,
    output_formats,
    runtime_of_kind,
)

__all__ = ["Format", "LoadOptions", "Retarget", "Runner", "all_formats", "artifact_filename", "bench_runtimes", "convert_targets", "format_named",
           "format_of_kind", "load", "make_runner", "output_formats", "runtime_of_kind"]
