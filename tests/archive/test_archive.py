"""The .slim archive: bit-exact round trips, real compression, and loud failure on damaged files."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch

from slimkit.archive import (
    decode_tensor,
    encode_tensor,
    load_onnx_archive,
    load_torch_archive,
    load_torch_state,
    read_archive,
    save_onnx_archive,
    save_torch_archive,
    write_archive,
)
from slimkit.archive.codec import _gap_widths, _gaps_from_symbols, gap_symbols
from slimkit.archive.container import MAGIC, PRELUDE_SIZE
from slimkit.archive.entropy import Reader, decode_symbols, empirical_bits, encode_symbols
from slimkit.demo_models import DigitsMLP
from slimkit.errors import SlimkitError


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(f"u{a.dtype.itemsize}")


def _assert_bit_equal(x: np.ndarray, y: np.ndarray) -> None:
    assert y.dtype == x.dtype and y.shape == x.shape
    assert np.array_equal(_bits(x), _bits(y))


def _roundtrip(x: np.ndarray) -> str:
    enc = encode_tensor(x, "t")
    assert enc.stats.encoded_bytes == len(enc.data)
    _assert_bit_equal(x, decode_tensor(enc.data, encoding=enc.encoding, dtype=x.dtype.name, shape=x.shape))
    return enc.encoding


def _clustered_sparse(rng, shape, *, k=16, zeros=0.95) -> np.ndarray:
    book = rng.normal(size=k).astype(np.float32)
    x = book[rng.integers(0, k, size=shape)]
    x[rng.random(shape) < zeros] = 0.0
    return x


def test_codec_roundtrips_bit_exact_on_every_kind_of_tensor():
    rng = np.random.default_rng(0)
    cases = {
        "dense": rng.normal(size=(64, 33)).astype(np.float32),
        "clustered_sparse": _clustered_sparse(rng, (300, 64)),
        "clustered_dense": _clustered_sparse(rng, (100, 50), zeros=0.0),
        "neg_zero": np.array([0.0, -0.0, 1.5, -0.0, 0.0, 0.0, -2.0], dtype=np.float32),
        "scalar": np.array(-0.0, dtype=np.float32),
        "one": np.array([3.25], dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "all_zero": np.zeros((7, 9), dtype=np.float32),
        "int64": np.array([0, 0, 2**62, -1, 0, 7, -(2**63)], dtype=np.int64),
        "float16": rng.normal(size=(10, 10)).astype(np.float16),
        "bool": rng.random(50) < 0.3,
        "long_gaps": np.zeros(1_000_003, dtype=np.float32),
    }
    cases["long_gaps"][[0, 17, 500_000, 1_000_002]] = [1.0, -0.0, 2.0, 3.0]
    cases["neg_zero_sparse"] = np.where(cases["clustered_sparse"] > 0, -0.0, cases["clustered_sparse"]).astype(
        np.float32)
    encodings = {name: _roundtrip(x) for name, x in cases.items()}
    assert encodings["dense"] == "raw"
    assert encodings["clustered_sparse"] in ("cb", "spcb")
    assert encodings["long_gaps"] == "sp"
    # -0.0 is a value, not a zero: it survives (the assert above compares bit patterns).
    assert _bits(cases["scalar"])[0] == 0x80000000


def test_codec_stats_and_compression_of_a_pruned_clustered_tensor():
    x = _clustered_sparse(np.random.default_rng(1), (300, 64))
    enc = encode_tensor(x, "fc1.weight")
    st = enc.stats
    assert (st.count, st.nonzeros, st.distinct) == (x.size, int((x != 0).sum()), 16)
    # ~960 nonzeros x (gap ~5.5 bits + index 4 bits) is about 1.2 KB; fp32 is 76.8 KB.
    assert st.encoded_bytes < x.nbytes / 50


def test_gap_symbols_cover_huge_gaps_with_a_small_alphabet():
    gaps = np.array([0, 7, 8, 15, 16, 1000, 2**40 + 12345, 2**62], dtype=np.int64)
    sym, width, extra = gap_symbols(gaps)
    assert sym.max() < 256 and list(sym[:3]) == [0, 7, 8]
    # Far too long to build as a tensor: check the decoder's inverse of the symbol/extra-bit split directly.
    assert np.array_equal(_gap_widths(sym), width)
    assert np.array_equal(_gaps_from_symbols(sym, extra), gaps)


def test_entropy_coder_reaches_the_empirical_entropy():
    rng = np.random.default_rng(2)
    p = np.array([0.6, 0.2, 0.1, 0.05, 0.03, 0.02])
    symbols = rng.choice(len(p), size=50_000, p=p) * 3 + 5  # sparse alphabet: table stores only used ones
    data = encode_symbols(symbols)
    floor = empirical_bits(symbols) / 8
    assert len(data) <= 1.05 * floor + 24, (len(data), floor)
    assert len(data) < symbols.size * 3 / 8  # far below the 3 bits/symbol of fixed-width packing
    reader = Reader(data)
    assert np.array_equal(decode_symbols(reader), symbols)
    reader.done()
    assert len(encode_symbols(np.full(1000, 4))) <= 4  # one symbol: no coded words at all


def _pruned_clustered_state(seed: int = 0, *, keep: float = 0.05, k: int = 16) -> dict[str, torch.Tensor]:
    """DigitsMLP weights magnitude-pruned to 95% zeros per tensor, nonzeros snapped to a 16-value codebook."""
    torch.manual_seed(seed)
    state = {}
    for name, t in DigitsMLP().state_dict().items():
        w = t.numpy().ravel().copy()
        n_keep = max(1, int(round(keep * w.size)))
        order = np.argsort(-np.abs(w), kind="stable")
        w[order[n_keep:]] = 0.0
        nz = w[order[:n_keep]]
        book = np.quantile(nz, (np.arange(k) + 0.5) / k).astype(np.float32)
        w[order[:n_keep]] = book[np.abs(nz[:, None] - book[None, :]).argmin(1)]
        state[name] = torch.from_numpy(w.reshape(t.shape))
    return state


def test_deep_compression_sized_mlp_archive_is_40x_smaller(tmp_path):
    state = _pruned_clustered_state()
    fp32 = sum(t.numel() * 4 for t in state.values())
    stats = save_torch_archive(state, tmp_path / "mlp.slim", factory="slimkit.demo_models:DigitsMLP")
    size = (tmp_path / "mlp.slim").stat().st_size
    assert size == stats["archive_bytes"]
    assert size <= fp32 / 40, f"{size} bytes for {fp32} fp32 bytes ({fp32 / size:.1f}x)"
    assert stats["overhead_bytes"] < 400  # prelude + compressed header for 6 tensors + hash
    assert [t["name"] for t in stats["tensors"]] == list(state)
    assert list(tmp_path.iterdir()) == [tmp_path / "mlp.slim"]  # the atomic write left no temp file

    module = load_torch_archive(tmp_path / "mlp.slim")  # built from the stored factory
    assert isinstance(module, DigitsMLP)
    for name, t in module.state_dict().items():
        assert torch.equal(t, state[name])
        assert np.array_equal(_bits(t.numpy()), _bits(state[name].numpy()))


def test_torch_state_roundtrip_keeps_dtypes_and_metadata(tmp_path):
    state = {
        "w": torch.randn(5, 3),
        "h": torch.randn(4).half(),
        "b": torch.randn(6).bfloat16(),
        "steps": torch.tensor(12345, dtype=torch.int64),
        "neg0": torch.tensor([-0.0, 0.0]),
    }
    save_torch_archive(state, tmp_path / "s.slim", factory=None, metadata={"recipe": "dc", "acc": 0.97})
    loaded, meta = load_torch_state(tmp_path / "s.slim")
    assert list(loaded) == list(state)
    for name, t in state.items():
        assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t)
    assert torch.signbit(loaded["neg0"]).tolist() == [True, False]
    assert meta == {"recipe": "dc", "acc": 0.97, "factory": None}


def test_torch_archive_without_factory_needs_the_module(tmp_path):
    state = _pruned_clustered_state(1)
    save_torch_archive(state, tmp_path / "m.slim", factory=None)
    with pytest.raises(SlimkitError, match="no factory") as info:
        load_torch_archive(tmp_path / "m.slim")
    assert "module=" in info.value.hint
    module = load_torch_archive(tmp_path / "m.slim", module=DigitsMLP())
    assert torch.equal(module.state_dict()["net.0.weight"], state["net.0.weight"])

    save_torch_archive(state, tmp_path / "bad.slim", factory="slimkit.no_such_module:Net")
    with pytest.raises(SlimkitError, match="cannot find the factory"):
        load_torch_archive(tmp_path / "bad.slim")
    with pytest.raises(SlimkitError, match="package.module:callable"):
        save_torch_archive(state, tmp_path / "x.slim", factory="os.system")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_roundtrip_is_bit_exact_and_runs_identically(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    module = DigitsMLP()
    module.load_state_dict(_pruned_clustered_state(3))
    module.eval()
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(1, 64),), buf, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}}, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    stats = save_onnx_archive(model, tmp_path / "mlp.slim", metadata={"source": "test"})
    assert stats["archive_bytes"] < len(buf.getvalue()) / 20
    restored = load_onnx_archive(tmp_path / "mlp.slim")
    assert read_archive(tmp_path / "mlp.slim").metadata == {"source": "test"}

    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in restored.graph.initializer}
    assert list(before) == list(after) and len(before) == 6
    for name, arr in before.items():
        _assert_bit_equal(arr, after[name])
    onnx.checker.check_model(restored)

    x = np.random.default_rng(4).normal(size=(8, 64)).astype(np.float32)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for m in (model, restored)]
    assert np.array_equal(run[0], run[1])
    with pytest.raises(SlimkitError, match="not a PyTorch state dict"):
        load_torch_state(tmp_path / "mlp.slim")


@pytest.fixture
def small_archive(tmp_path):
    rng = np.random.default_rng(5)
    tensors = {"a": _clustered_sparse(rng, (40, 30)), "b": rng.normal(size=7).astype(np.float32),
               "c": np.arange(5, dtype=np.int64)}
    path = tmp_path / "small.slim"
    write_archive(path, tensors, structure=b'{"graph": "x"}' * 5, structure_kind="test", metadata={"k": [1, 2]})
    archive = read_archive(path)
    assert archive.structure == b'{"graph": "x"}' * 5 and archive.structure_kind == "test"
    assert archive.metadata == {"k": [1, 2]}
    for name, x in tensors.items():
        _assert_bit_equal(x, archive.tensors[name])
    return path


def _expect_invalid(path, data: bytes, what: str) -> None:
    path.write_bytes(data)
    with pytest.raises(SlimkitError) as info:
        read_archive(path)
    assert str(path) in info.value.problem, what
    assert info.value.hint, what


def test_truncated_archives_fail_clearly_at_every_offset(small_archive, tmp_path):
    data = small_archive.read_bytes()
    bad = tmp_path / "bad.slim"
    for cut in range(len(data)):  # every proper prefix, the empty file included
        _expect_invalid(bad, data[:cut], f"cut at {cut}")
    _expect_invalid(bad, data + b"\0", "trailing byte")


def test_flipped_bytes_wrong_magic_and_future_version_fail_clearly(small_archive, tmp_path):
    data = small_archive.read_bytes()
    bad = tmp_path / "bad.slim"
    for pos in range(len(data)):
        flipped = bytearray(data)
        flipped[pos] ^= 0x40
        _expect_invalid(bad, bytes(flipped), f"flip at {pos}")
    _expect_invalid(bad, b"PK\x03\x04" + data[4:], "zip magic")
    with pytest.raises(SlimkitError, match="not a valid .slim archive: it does not start"):
        read_archive(bad)
    future = bytearray(data)
    future[len(MAGIC)] = 2
    bad.write_bytes(bytes(future))
    with pytest.raises(SlimkitError, match="format version 2") as info:
        read_archive(bad)
    assert "upgrade" in info.value.hint
    with pytest.raises(SlimkitError, match="does not exist"):
        read_archive(tmp_path / "missing.slim")


def test_header_is_compact_json_with_the_documented_fields(small_archive):
    import zlib

    data = small_archive.read_bytes()
    _, version, _, _, total, header_len = struct.unpack_from("<5sBBBQI", data)
    assert (version, total) == (1, len(data))
    header = json.loads(zlib.decompress(data[PRELUDE_SIZE:PRELUDE_SIZE + header_len]))
    assert set(header) == {"coder", "meta", "structure", "tensors"}
    assert [t["n"] for t in header["tensors"]] == ["a", "b", "c"]
    assert set(header["tensors"][0]) == {"n", "d", "s", "e", "o", "l"}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_tensors_are_refused_by_name(tmp_path, bad):
    x = np.ones(10, dtype=np.float32)
    x[3] = bad
    with pytest.raises(SlimkitError, match="'layer.weight' contains 1 NaN/Inf"):
        write_archive(tmp_path / "n.slim", {"layer.weight": x}, structure=b"", structure_kind="test", metadata={})
    assert not (tmp_path / "n.slim").exists()


def test_unsupported_dtype_and_bad_metadata_are_refused(tmp_path):
    with pytest.raises(SlimkitError, match="complex64"):
        encode_tensor(np.ones(3, dtype=np.complex64), "z")
    with pytest.raises(SlimkitError, match="not plain JSON"):
        write_archive(tmp_path / "m.slim", {}, structure=b"", structure_kind="test", metadata={"x": object()})
