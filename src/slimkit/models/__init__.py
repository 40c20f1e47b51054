"""Model kinds (envelopes around a model plus the metadata passes and runners need); loading is in `slimkit.formats`."""

from slimkit.models.base import (
    InputSpec,
    ModelKind,
    OnnxModel,
    OpenVinoModel,
    TorchModel,
    WorkingModel,
)

__all__ = [
    "InputSpec",
    "ModelKind",
    "OnnxModel",
    "OpenVinoModel",
    "TorchModel",
    "WorkingModel",
]
