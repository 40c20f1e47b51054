"""ONNX: the working format passes transform, run with ONNX Runtime's CPU provider."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from slimkit.errors import SlimkitError, first_line
from slimkit.formats.registry import Format, LoadOptions, Runner
from slimkit.models.base import ModelKind, OnnxModel, WorkingModel, onnx_files, save_onnx
from slimkit.models.limits import onnx_max_positions, record_in_onnx, sequence_error
from slimkit.models.sidecar import apply_sidecar
from slimkit.quiet import verbose


def load_onnx(path: Path, *, task: str | None = None, check: bool = True) -> OnnxModel:
    """Load an ONNX file (external data resolved beside it) and check ONNX Runtime can run it."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=True)
    except FileNotFoundError as exc:
        raise SlimkitError(
            f"{path}: an external data file is missing ({Path(str(exc.filename or exc)).name})",
            "keep the model's .data files in the same folder as the .onnx file",
        ) from exc
    except Exception as exc:
        # onnx reports a missing external data file as a ValidationError, not FileNotFoundError
        missing = [f for f in onnx_files(path)[1:] if not f.exists()]
        if missing:
            raise SlimkitError(
                f"{path}: an external data file is missing ({missing[0].name})",
                "keep the model's .data files in the same folder as the .onnx file",
            ) from exc
        raise SlimkitError(
            f"{path} is not a valid ONNX model ({type(exc).__name__})",
            "the file is truncated or not ONNX; export it again",
        ) from exc
    if len(proto.graph.node) == 0 and len(proto.graph.output) == 0:
        raise SlimkitError(f"{path} is not a valid ONNX model (empty graph)", "the file is truncated or not ONNX")
    from slimkit.models.onnx_checks import check_onnx_model

    check_onnx_model(proto, str(path), path)  # damage (cycles, 10^9 dims, bad bytes) refused here, in one line
    model = OnnxModel(path=path, _proto=proto, source=str(path), task=task)
    _read_slimkit_metadata(model)
    if check:
        ort_session(model, threads=1)  # an unsupported op is reported at load time, not mid-run
    return model


def _read_slimkit_metadata(model: OnnxModel) -> None:
    """slimkit records the task and the position limit in the ONNX metadata when it exports a model."""
    meta = {p.key: p.value for p in model.proto.metadata_props}
    if model.task is None and meta.get("slimkit.task"):
        model.task = meta["slimkit.task"]
    model.max_positions = onnx_max_positions(model.proto)


def _load(path: Path, options: LoadOptions) -> WorkingModel:
    return apply_sidecar(load_onnx(path, task=options.task, check=options.check), path)


# ONNX Runtime's own log lines ("[E:onnxruntime:...]" in red) would stand beside slimkit's one-line error,
# which already carries the exception's text; they are shown only with --verbose.
_QUIET_SEVERITY = 4  # fatal only
_VERBOSE_SEVERITY = 2  # warnings and up


def ort_severity() -> int:
    return _VERBOSE_SEVERITY if verbose() else _QUIET_SEVERITY


def ort_session(model: OnnxModel, threads: int = 2, *, optimization: str = "all"):
    """An ONNX Runtime CPU session with fixed threads; a model it cannot load becomes one line that says why."""
    import onnxruntime as ort

    ort.set_default_logger_severity(ort_severity())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[optimization]
    opts.log_severity_level = ort_severity()
    try:
        if model.path is not None and model.path.exists():
            return ort.InferenceSession(str(model.path), opts, providers=["CPUExecutionProvider"])
        return ort.InferenceSession(model.proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise SlimkitError(f"ONNX Runtime cannot run {model.source or 'this model'}: {_ort_text(exc)}",
                           _load_hint(exc)) from exc


def _ort_error_kind(exc: BaseException) -> str:
    """ONNX Runtime's own error class ('NotImplemented', 'InvalidGraph', 'InvalidArgument', 'Fail', ...)."""
    return type(exc).__name__


def _ort_text(exc: BaseException) -> str:
    """The first line of ONNX Runtime's message without its "[ONNXRuntimeError] : 1 : FAIL : " prefix."""
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first_line(exc))


def _load_hint(exc: BaseException) -> str:
    kind = _ort_error_kind(exc)
    if kind == "NotImplemented" or "is not a registered function/op" in str(exc):
        return "the model uses an op (or an op version) ONNX Runtime does not implement; re-export it with supported ops"
    if kind in ("InvalidGraph", "InvalidProtobuf"):
        return "the graph is malformed (the message says where); export the model again"
    if kind == "NoSuchFile":
        return "a file the model refers to is missing; keep its .data files beside it"
    return "run with --verbose to see ONNX Runtime's log"


class OrtRunner(Runner):
    runtime = "onnxruntime"

    def __init__(self, model: OnnxModel, threads: int) -> None:
        self.session = ort_session(model, threads)
        self.input_specs = model.input_specs
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.max_positions = model.max_positions
        # Token ids read for another runtime's model (LiteRT takes int32) are cast to the graph's int64.
        self._int_inputs = {s.name: np.dtype(s.dtype) for s in self.input_specs if s.dtype.startswith("int")}

    def run(self, feed):
        for name, dtype in self._int_inputs.items():
            value = feed.get(name)
            if value is not None and value.dtype != dtype and np.issubdtype(value.dtype, np.integer):
                feed = {**feed, name: value.astype(dtype)}
        try:
            out = self.session.run(None, feed)
        except Exception as exc:
            specific = sequence_error(self.max_positions, feed)
            if specific is not None:
                raise specific from exc
            if _ort_error_kind(exc) == "InvalidArgument":  # a name, rank, shape or type the graph does not take
                raise SlimkitError(f"ONNX Runtime refused this input: {_ort_text(exc)}",
                                   "check the data's array names, shapes and types against `slimkit inspect`") from exc
            raise SlimkitError(f"ONNX Runtime failed while running the model: {_ort_text(exc)}",
                               "the model fails inside one of its ops on this input; run with --verbose for "
                               "ONNX Runtime's log") from exc
        # Non-tensor outputs (sequences of maps, e.g. sklearn's ZipMap) are skipped: nothing to compare.
        return [o for o in out if isinstance(o, np.ndarray)]


def write_onnx(model: WorkingModel, target: Path) -> None:
    assert isinstance(model, OnnxModel)
    record_in_onnx(model.proto, model.max_positions)  # passes may rebuild the proto without metadata
    save_onnx(model.proto, target)


FORMAT = Format(
    name="onnx", label="ONNX", kind=ModelKind.ONNX, suffixes=(".onnx",), load=_load, runner=OrtRunner, runtime="onnxruntime",
    filename="model.onnx", write=write_onnx, converter="to-onnx", plain_recipe="onnx", output=True,
    convert_variants={"fp16": "fp16"},
    retarget=None, description="ONNX, run with ONNX Runtime",
)
