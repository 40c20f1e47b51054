"""Model kinds (envelopes around a model plus the metadata passes and runners need) and loaders."""

from slimkit.models.base import (
    InputSpec,
    ModelKind,
    OnnxModel,
    OpenVinoModel,
    TfliteModel,
    TorchModel,
    WorkingModel,
)

__all__ = [
    "InputSpec",
    "ModelKind",
    "OnnxModel",
    "OpenVinoModel",
    "TfliteModel",
    "TorchModel",
    "WorkingModel",
]
