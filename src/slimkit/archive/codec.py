"""The `.slim` tensor codec: Deep Compression's storage (Han et al. 2016) for one numpy array, bit-exact.

Pruned tensors store where their nonzeros are as entropy-coded gaps (zero runs) instead of a dense array;
clustered tensors (at most 256 distinct nonzero values) store a small codebook plus entropy-coded indices
instead of 32-bit values. The codec works on bit patterns (the array viewed as unsigned integers of the
same width), so it is exact for every value, -0.0 included, and it handles float16/int64/bool the same way
as float32. Only the all-zero bit pattern counts as "zero"; -0.0 is an ordinary nonzero value. NaN and
Inf are refused: a model that contains them is broken, and storing them silently would hide that.

No model types here: numpy in, bytes out. Layouts are specified in docs/slim-format.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimkit.archive.entropy import (
    FormatError,
    Reader,
    decode_symbols,
    empirical_bits,
    encode_symbols,
    pack_bits,
    sorted_unique,
    unpack_bits,
    varint,
)
from slimkit.errors import SlimkitError

# Tensor encodings, as named in the archive header.
RAW = "raw"  # every element's bytes, little-endian
CODEBOOK = "cb"  # codebook + an index for every element (dense clustered)
SPARSE = "sp"  # gap stream + raw bytes of the nonzeros (pruned)
SPARSE_CODEBOOK = "spcb"  # gap stream + codebook + an index per nonzero (pruned and clustered)
ENCODINGS = (RAW, CODEBOOK, SPARSE, SPARSE_CODEBOOK)

MAX_CODEBOOK = 256  # Deep Compression's 8-bit index ceiling, for the nonzero values
DIRECT_GAPS = 8  # gaps below this are their own symbol; larger ones are a bucket symbol + extra bits
MAX_GAP_SYMBOL = DIRECT_GAPS + 4 * (62 - 3) + 3
_SAMPLE = 1 << 16  # elements looked at before paying for a full np.unique on a big tensor

SUPPORTED_DTYPES = frozenset(
    ["float16", "float32", "float64", "int8", "int16", "int32", "int64",
     "uint8", "uint16", "uint32", "uint64", "bool"]
)


@dataclass(frozen=True)
class TensorStats:
    """What the codec found and paid for one tensor; `distinct` counts distinct nonzero bit patterns."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    count: int
    nonzeros: int
    distinct: int
    encoding: str
    encoded_bytes: int

    @property
    def raw_bytes(self) -> int:
        return self.count * np.dtype(self.dtype).itemsize

    def as_dict(self) -> dict:
        return {
            "name": self.name, "dtype": self.dtype, "shape": list(self.shape), "count": self.count,
            "nonzeros": self.nonzeros, "distinct": self.distinct, "encoding": self.encoding,
            "encoded_bytes": self.encoded_bytes, "raw_bytes": self.raw_bytes,
        }


@dataclass(frozen=True)
class EncodedTensor:
    encoding: str
    data: bytes
    stats: TensorStats


def _bits_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(f"<u{dtype.itemsize}")


def check_dtype(dtype: np.dtype | str, name: str) -> np.dtype:
    """The numpy dtype for a supported dtype name, or a SlimkitError naming the tensor."""
    dt = np.dtype(dtype)
    if dt.name not in SUPPORTED_DTYPES:
        raise SlimkitError(
            f"tensor '{name}' has dtype {dt} which the .slim codec does not store",
            f"supported dtypes: {', '.join(sorted(SUPPORTED_DTYPES))}",
        )
    return dt


def gap_symbols(gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split zero-run lengths into (symbol, extra-bit count, extra-bit value), like DEFLATE's length codes.

    A gap g < 8 is symbol g. A larger gap with its top bit at position b (b >= 3) is symbol
    8 + 4*(b-3) + (the two bits below the top bit), followed by its low b-2 bits raw. This replaces Deep
    Compression's "filler zero" (runs longer than the index width) without spending symbols on long runs.
    """
    gaps = gaps.astype(np.int64)
    sym = gaps.copy()
    width = np.zeros(len(gaps), dtype=np.int64)
    extra = np.zeros(len(gaps), dtype=np.uint64)
    big = np.flatnonzero(gaps >= DIRECT_GAPS)
    if len(big):
        g = gaps[big]
        top = np.frexp(g.astype(np.float64))[1].astype(np.int64) - 1  # exact for g < 2**53
        w = top - 2
        sym[big] = DIRECT_GAPS + 4 * (top - 3) + ((g >> w) & 3)
        width[big] = w
        extra[big] = (g & ((np.int64(1) << w) - 1)).astype(np.uint64)
    return sym, width, extra


def _gap_widths(sym: np.ndarray) -> np.ndarray:
    width = np.zeros(len(sym), dtype=np.int64)
    big = sym >= DIRECT_GAPS
    width[big] = (sym[big] - DIRECT_GAPS) // 4 + 1
    return width


def _gaps_from_symbols(sym: np.ndarray, extra: np.ndarray) -> np.ndarray:
    gaps = sym.astype(np.int64)
    big = np.flatnonzero(sym >= DIRECT_GAPS)
    if len(big):
        s = sym[big] - DIRECT_GAPS
        w = s // 4 + 1
        gaps[big] = ((4 | (s % 4)) << w) | extra[big].astype(np.int64)
    return gaps


def _stream_cost(symbols: np.ndarray) -> float:
    """Estimated bytes of `encode_symbols(symbols)`: entropy + a 2-bytes-per-symbol table + rANS slack."""
    if symbols.size == 0:
        return 1.0
    m = int((np.bincount(symbols) > 0).sum())
    return empirical_bits(symbols) / 8 + 2 * m + 8


def encode_tensor(array: np.ndarray, name: str = "tensor") -> EncodedTensor:
    """Encode one array with the cheapest of the four layouts; `name` only appears in errors and stats."""
    arr = np.asarray(array)
    dt = check_dtype(arr.dtype, name)
    if dt.kind == "f" and arr.size and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise SlimkitError(
            f"tensor '{name}' contains {bad} NaN/Inf value(s); a .slim archive only stores finite floats",
            "fix the model (or the compression step that produced it) before archiving",
        )
    width = dt.itemsize
    bits = np.ascontiguousarray(arr).astype(dt.newbyteorder("<"), copy=False).view(_bits_dtype(dt)).ravel()
    n = bits.size
    nz_pos = np.flatnonzero(bits)
    nnz = len(nz_pos)
    nz_bits = bits[nz_pos] if nnz < n else bits

    # Clustered? A sample settles the common "no" case for big dense tensors without a full sort.
    sample = sorted_unique(nz_bits[:_SAMPLE])[0]
    if len(sample) > MAX_CODEBOOK:
        codebook = None
        distinct = len(sorted_unique(nz_bits)[0]) if nz_bits.size > _SAMPLE else len(sample)
    else:
        codebook, nz_index = np.unique(nz_bits, return_inverse=True)
        distinct = len(codebook)
        if distinct > MAX_CODEBOOK:
            codebook = None

    costs: dict[str, float] = {RAW: float(n * width)}
    dense = n == 0 or nnz > 0.9 * n
    if not dense:
        gaps = np.diff(nz_pos, prepend=-1) - 1
        g_sym, g_width, g_extra = gap_symbols(gaps)
        gap_cost = _stream_cost(g_sym) + g_width.sum() / 8
        costs[SPARSE] = gap_cost + nnz * width
    if codebook is not None:
        cb_cost = 1 + (distinct + 1) * width
        if not dense:
            costs[SPARSE_CODEBOOK] = gap_cost + cb_cost + _stream_cost(nz_index)
        full_index = np.zeros(n, dtype=np.int64)
        if nnz < n:
            full_index[nz_pos] = nz_index + 1  # zero is codebook entry 0 when the tensor has zeros
        else:
            full_index = nz_index
        costs[CODEBOOK] = cb_cost + _stream_cost(full_index)
    encoding = min(costs, key=costs.__getitem__)

    out = bytearray()
    if encoding == RAW:
        out += bits.tobytes()
    elif encoding == CODEBOOK:
        book = codebook if nnz == n else np.concatenate([np.zeros(1, bits.dtype), codebook])
        out += varint(len(book)) + book.astype(bits.dtype).tobytes()
        out += encode_symbols(full_index)
    else:
        out += encode_symbols(g_sym) + pack_bits(g_extra, g_width)
        if encoding == SPARSE:
            out += nz_bits.tobytes()
        else:
            out += varint(len(codebook)) + codebook.astype(bits.dtype).tobytes()
            out += encode_symbols(nz_index)
    data = bytes(out)
    stats = TensorStats(name, dt.name, tuple(int(d) for d in arr.shape), n, nnz, distinct, encoding, len(data))
    return EncodedTensor(encoding, data, stats)


def decode_tensor(data: bytes | memoryview, *, encoding: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `encode_tensor`. Raises `FormatError` on bytes that do not decode to exactly this tensor."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise FormatError(f"unknown dtype {dtype!r}") from exc
    if dt.name not in SUPPORTED_DTYPES:
        raise FormatError(f"unsupported dtype {dtype!r}")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise FormatError(f"bad shape {shape!r}")
    n = int(np.prod(shape, dtype=np.int64))
    bdt = _bits_dtype(dt)
    width = dt.itemsize
    reader = Reader(data)
    if encoding == RAW:
        bits = np.frombuffer(reader.take(n * width), dtype=bdt)
    elif encoding == CODEBOOK:
        book = _read_codebook(reader, bdt)
        index = decode_symbols(reader, max_count=n)
        if len(index) != n or (len(index) and index.max() >= len(book)):
            raise FormatError("codebook indices do not match the tensor")
        bits = book[index]
    elif encoding in (SPARSE, SPARSE_CODEBOOK):
        g_sym = decode_symbols(reader, max_count=n)
        if len(g_sym) and g_sym.max() > MAX_GAP_SYMBOL:
            raise FormatError("gap symbol out of range")
        gaps = _gaps_from_symbols(g_sym, unpack_bits(reader, _gap_widths(g_sym)))
        pos = np.cumsum(gaps + 1) - 1
        nnz = len(pos)
        if nnz and pos[-1] >= n:
            raise FormatError("nonzero positions run past the end of the tensor")
        if encoding == SPARSE:
            values = np.frombuffer(reader.take(nnz * width), dtype=bdt)
        else:
            book = _read_codebook(reader, bdt)
            index = decode_symbols(reader, max_count=nnz)
            if len(index) != nnz or (nnz and index.max() >= len(book)):
                raise FormatError("codebook indices do not match the nonzeros")
            values = book[index]
        bits = np.zeros(n, dtype=bdt)
        bits[pos] = values
    else:
        raise FormatError(f"unknown tensor encoding {encoding!r}")
    reader.done()
    return bits.view(dt.newbyteorder("<")).astype(dt, copy=False).reshape(shape).copy()


def _read_codebook(reader: Reader, bdt: np.dtype) -> np.ndarray:
    k = reader.varint()
    if k > MAX_CODEBOOK + 1:
        raise FormatError(f"codebook of {k} entries")
    return np.frombuffer(reader.take(k * bdt.itemsize), dtype=bdt)
