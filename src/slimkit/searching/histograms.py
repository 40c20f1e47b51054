"""Weight histograms before/after for the recommended artifact: what quantization or clustering did to the
largest layers' values, read from the ONNX files (baseline export vs artifact), never from model objects.

A weight is found in the artifact under its own name (fp16, clustered or factorized weights rebuilt by graph
nodes are evaluated with ONNX's reference evaluator), or as ONNX Runtime's `<name>_quantized` with its scale
and zero point. Other formats (OpenVINO IR, TFLite) get no histogram: the report says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LAYERS = 3
BINS = 40


def weight_histograms(baseline_dir: Path, artifact: Path, layers: int = LAYERS) -> list[dict]:
    import onnx
    from onnx import numpy_helper

    if artifact.suffix != ".onnx":
        return []
    base_files = sorted(Path(baseline_dir).glob("*.onnx"))
    if not base_files:
        return []
    base = onnx.load(str(base_files[0]))
    after = onnx.load(str(artifact))
    before = {t.name: numpy_helper.to_array(t) for t in base.graph.initializer}
    largest = sorted((n for n, a in before.items() if a.dtype.kind == "f" and a.ndim >= 2),
                     key=lambda n: -before[n].size)[:layers]
    inits = {t.name: t for t in after.graph.initializer}
    out = []
    for name in largest:
        values, technique = _after_values(name, inits, after, before[name].shape)
        if values is None:
            continue
        b = before[name].astype(np.float64).ravel()
        a = values.astype(np.float64).ravel()
        low, high = float(min(b.min(), a.min())), float(max(b.max(), a.max()))
        if not np.isfinite([low, high]).all() or low == high:
            continue
        edges = np.linspace(low, high, BINS + 1)
        out.append({"layer": name, "technique": technique, "edges": edges.tolist(),
                    "before": np.histogram(b, edges)[0].tolist(), "after": np.histogram(a, edges)[0].tolist(),
                    "distinct_after": int(min(np.unique(a).size, 1 << 20))})
    return out


def _after_values(name: str, inits: dict, model, shape) -> tuple[np.ndarray | None, str]:
    from onnx import numpy_helper

    if name in inits:
        array = numpy_helper.to_array(inits[name])
        if array.shape == tuple(shape):
            return array.astype(np.float32), "fp16" if array.dtype == np.float16 else "unchanged"
    q = inits.get(f"{name}_quantized")
    if q is not None:
        values = numpy_helper.to_array(q).astype(np.float64)
        scale = numpy_helper.to_array(inits[f"{name}_scale"]).astype(np.float64) if f"{name}_scale" in inits else None
        zero = inits.get(f"{name}_zero_point")
        zp = numpy_helper.to_array(zero).astype(np.float64) if zero is not None else 0.0
        if scale is None:
            return None, ""
        for axis in range(values.ndim):  # per-channel scales lie along one axis
            if scale.ndim == 0 or scale.size == 1:
                return ((values - zp) * scale).reshape(shape), "int8"
            if values.shape[axis] == scale.size:
                view = [1] * values.ndim
                view[axis] = scale.size
                zpv = np.reshape(zp, view) if np.size(zp) == scale.size else zp
                return ((values - zpv) * scale.reshape(view)).reshape(shape), "int8 per-channel"
        return None, ""
    produced = any(name in node.output for node in model.graph.node)
    if produced:  # a weight rebuilt in the graph (a codebook gather, low-rank factors): evaluate its nodes
        try:
            return _evaluate_constant(model, name).reshape(shape), "clustered/rebuilt"
        except Exception:  # a rebuild that needs graph inputs: no histogram for this layer
            return None, ""
    return None, ""


def _evaluate_constant(model, name: str) -> np.ndarray:
    import onnx
    from onnx.reference import ReferenceEvaluator
    from onnx.utils import Extractor

    inferred = onnx.shape_inference.infer_shapes(model)
    sub = Extractor(inferred).extract_model([], [name])
    return np.asarray(ReferenceEvaluator(sub).run(None, {})[0])
