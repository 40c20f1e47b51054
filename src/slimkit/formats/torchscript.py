"""TorchScript files (`torch.jit.save`), loaded into the PyTorch kind with torch's own restricted loader."""

from slimkit.formats.torch import TORCHSCRIPT as FORMAT

__all__ = ["FORMAT"]
