"""The `.slim` archive: Deep Compression storage (pruning gaps + codebooks + entropy coding), bit-exact.

See docs/slim-format.md for the byte layout.
"""

from slimkit.archive.codec import TensorStats, decode_tensor, encode_tensor
from slimkit.archive.container import Archive, read_archive, write_archive
from slimkit.archive.onnx_io import load_onnx_archive, save_onnx_archive
from slimkit.archive.torch_io import load_torch_archive, load_torch_state, save_torch_archive

__all__ = [
    "Archive", "TensorStats", "decode_tensor", "encode_tensor", "load_onnx_archive", "load_torch_archive",
    "load_torch_state", "read_archive", "save_onnx_archive", "save_torch_archive", "write_archive",
]
