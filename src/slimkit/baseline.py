"""The deployable baseline: the plain fp32 export of the original on the artifact's own runtime.

A technique is judged against the model a user would ship without it. When the input is a PyTorch model
and the artifact runs on ONNX Runtime, comparing with PyTorch eager credits the runtime switch to the
technique (a plain export "is 10x faster", int8 that is slower than float ONNX "is 0.94x"). So `optimize`
also makes the plain export for the artifact's runtime, measures it in the same interleaved run, and
takes every ratio and flag of the artifact against it; the original stays as the reference for fidelity.
"""

from __future__ import annotations

from slimkit.formats import format_of_kind
from slimkit.pipeline import load_recipe, plan


def baseline_recipe(original_kind: str, artifact_kind: str, steps: list[tuple[str, dict]]) -> str | None:
    """The built-in recipe whose output is the artifact's baseline, or None when the original already runs on
    the artifact's runtime (it is the baseline) or when the recipe is itself that plain export."""
    # Each format names what runs it and the built-in recipe that makes its plain fp32 artifact.
    if format_of_kind(original_kind).runtime == format_of_kind(artifact_kind).runtime:
        return None
    plain = format_of_kind(artifact_kind).plain_recipe
    if plain is None:
        return None
    if [(n, c or {}) for n, c in steps] == [(n, c or {}) for n, c in load_recipe(plain).steps]:
        return None
    return plain


def baseline_label(recipe_name: str) -> str:
    return f"plain {recipe_name}"


def reusable_prefix(plain: str, original_kind: str, records: list[dict]) -> int | None:
    """How many leading steps of a pipeline run were exactly the plain export (same passes, same configs), so
    the model after them is the baseline and need not be made again; None when the run did not start so."""
    wanted = [(step.pass_.name, step.pass_.config.model_dump(mode="json"))
              for step in plan(load_recipe(plain), original_kind)]
    done = [(r["pass"], r["config"]) for r in records[:len(wanted)]]
    return len(wanted) if done == wanted and len(records) > len(wanted) else None
