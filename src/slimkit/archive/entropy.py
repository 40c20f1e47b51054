"""Entropy coding for the `.slim` archive: varints, a static rANS symbol stream, and packed raw bits.

A symbol stream stores its own frequency table (the integer count of every symbol it uses), so the decoder
derives exactly the probabilities the encoder used; the rANS coder is constriction's `AnsCoder` with a
`Categorical(perfect=False)` model built from those counts. Everything here is vectorized: one call into
constriction per stream, numpy for the rest. The byte layout is specified in docs/slim-format.md.
"""

from __future__ import annotations

import numpy as np

# A stream with more distinct symbols than this is a caller bug: the codec's alphabets are at most 257 wide.
MAX_ALPHABET = 1 << 16


class FormatError(ValueError):
    """Malformed encoded bytes; the container turns it into a SlimkitError naming the file."""


class Reader:
    """A cursor over encoded bytes that refuses to read past the end (truncation is an error, not garbage)."""

    def __init__(self, data: bytes | memoryview, pos: int = 0) -> None:
        self.data = memoryview(data)
        self.pos = pos

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise FormatError(f"needs {n} bytes at offset {self.pos}, only {len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        shift = result = 0
        while True:
            if self.pos >= len(self.data):
                raise FormatError("varint runs past the end")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise FormatError("varint longer than 64 bits")

    def done(self) -> None:
        if self.pos != len(self.data):
            raise FormatError(f"{len(self.data) - self.pos} unexpected trailing bytes")


def varint(value: int) -> bytes:
    """Unsigned LEB128: small counts and lengths cost one byte, which keeps headers and tables tiny."""
    if value < 0:
        raise ValueError(f"varint of a negative number {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _model(counts: np.ndarray):
    import constriction

    # Float64 holds every count exactly, so encoder and decoder build the identical fixed-point model.
    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def encode_symbols(symbols: np.ndarray) -> bytes:
    """Entropy-code non-negative integer symbols with a static model stored as the stream's count table.

    Layout: varint m (distinct symbols used), m varint symbol values (first absolute, then gap-1 to the
    previous), m varint counts, and when m >= 2: varint W then W little-endian uint32 rANS words. The stream
    length is the sum of the counts; a stream using one symbol (or none) needs no coded words at all.
    """
    import constriction

    symbols = np.asarray(symbols).ravel()
    if symbols.size == 0:
        return varint(0)
    if symbols.min() < 0:
        raise ValueError("symbols must be non-negative")
    if symbols.max() < MAX_ALPHABET:  # the codec's case: a bincount beats sorting on big tensors
        full = np.bincount(symbols)
        used = np.flatnonzero(full)
        counts = full[used]
        lut = np.zeros(len(full), dtype=np.int32)
        lut[used] = np.arange(len(used), dtype=np.int32)
        dense = lut[symbols]
    else:
        used, dense, counts = np.unique(symbols, return_inverse=True, return_counts=True)
    if len(used) > MAX_ALPHABET:
        raise ValueError(f"alphabet of {len(used)} symbols is larger than {MAX_ALPHABET}")
    deltas = np.diff(used, prepend=-1) - 1
    out = bytearray(varint(len(used)))
    for d in deltas.tolist():
        out += varint(d)
    for c in counts.tolist():
        out += varint(c)
    if len(used) >= 2:
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(dense.astype(np.int32), _model(counts))
        words = coder.get_compressed().astype("<u4")
        out += varint(len(words))
        out += words.tobytes()
    return bytes(out)


def decode_symbols(reader: Reader, *, max_count: int | None = None) -> np.ndarray:
    """Inverse of `encode_symbols`, reading from `reader`; returns int64 symbols.

    `max_count` bounds the stream length the caller can accept, so a bad table cannot ask for a huge
    allocation.
    """
    import constriction

    m = reader.varint()
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    if m > MAX_ALPHABET:
        raise FormatError(f"symbol table of {m} entries")
    used = np.array([reader.varint() for _ in range(m)], dtype=np.int64)
    used = np.cumsum(used + 1) - 1
    counts = np.array([reader.varint() for _ in range(m)], dtype=np.int64)
    if (counts <= 0).any():
        raise FormatError("zero count in a symbol table")
    total = int(counts.sum())
    if max_count is not None and total > max_count:
        raise FormatError(f"stream of {total} symbols where at most {max_count} fit")
    if m == 1:
        return np.full(total, used[0], dtype=np.int64)
    n_words = reader.varint()
    words = np.frombuffer(reader.take(4 * n_words), dtype="<u4").astype(np.uint32)
    coder = constriction.stream.stack.AnsCoder(words)
    dense = coder.decode(_model(counts), total)
    if not coder.is_empty():
        raise FormatError("rANS stream has words left over after decoding")
    return used[dense]


def pack_bits(values: np.ndarray, widths: np.ndarray) -> bytes:
    """Concatenate the low `widths[i]` bits of `values[i]`, least significant bit first, into bytes."""
    widths = widths.astype(np.int64)
    total = int(widths.sum())
    if total == 0:
        return b""
    starts = np.cumsum(widths) - widths
    rep = np.repeat(values.astype(np.uint64), widths)
    shift = (np.arange(total, dtype=np.int64) - np.repeat(starts, widths)).astype(np.uint64)
    bits = ((rep >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits, bitorder="little").tobytes()


def unpack_bits(reader: Reader, widths: np.ndarray) -> np.ndarray:
    """Inverse of `pack_bits`: reads ceil(sum(widths) / 8) bytes and returns one uint64 per width."""
    widths = widths.astype(np.int64)
    total = int(widths.sum())
    out = np.zeros(len(widths), dtype=np.uint64)
    if total == 0:
        return out
    raw = np.frombuffer(reader.take((total + 7) // 8), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little")[:total].astype(np.uint64)
    starts = np.cumsum(widths) - widths
    shift = (np.arange(total, dtype=np.int64) - np.repeat(starts, widths)).astype(np.uint64)
    nonempty = np.flatnonzero(widths > 0)
    out[nonempty] = np.add.reduceat(bits << shift, starts[nonempty])
    return out


def sorted_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, their counts) by sorting; numpy 2.4's hash-based np.unique is far slower here."""
    s = np.sort(values.ravel())
    if s.size == 0:
        return s, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    return s[starts], np.diff(np.append(starts, s.size))


def empirical_bits(symbols: np.ndarray) -> float:
    """n * H(empirical distribution) in bits: the floor any static model coder can reach on this stream."""
    if symbols.size == 0:
        return 0.0
    _, counts = sorted_unique(symbols)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())
