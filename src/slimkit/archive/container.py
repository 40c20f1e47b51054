"""The `.slim` container: a fixed prelude, a compressed JSON header, payload sections, a SHA-256 trailer.

Every read verifies the whole-file hash before it decodes anything, so a corrupt or truncated file is
always a `SlimkitError` saying why, never a silently different model. Writes are atomic (temp file in the
same folder, then os.replace), so a crash mid-write leaves the old file or none. Layout: docs/slim-format.md.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slimkit.archive.codec import EncodedTensor, decode_tensor, encode_tensor
from slimkit.archive.entropy import FormatError
from slimkit.errors import SlimkitError
from slimkit.fileio import write_atomic

MAGIC = b"\x93SLIM"
VERSION = 1
_PRELUDE = struct.Struct("<5sBBBQI")  # magic, version, reserved, reserved, total length, header length
PRELUDE_SIZE = _PRELUDE.size  # 20
DIGEST_SIZE = 32
CODER = "rans32-constriction-0.5"  # how symbol streams are coded; a reader refuses a coder it does not know


@dataclass
class Archive:
    """A decoded archive: tensors by name (in stored order), the structure blob and what kind it is."""

    tensors: dict[str, np.ndarray]
    structure: bytes
    structure_kind: str
    metadata: dict = field(default_factory=dict)


def _invalid(path: str | Path, why: str) -> SlimkitError:
    return SlimkitError(
        f"{path} is not a valid .slim archive: {why}",
        "the file is corrupt, truncated or not a .slim archive; re-create it or copy it again",
    )


def write_archive(
    path: str | Path,
    tensors: dict[str, np.ndarray],
    *,
    structure: bytes,
    structure_kind: str,
    metadata: dict | None = None,
) -> dict:
    """Encode `tensors`, write the archive atomically, and return size statistics (total and per tensor)."""
    path = Path(path)
    encoded: list[tuple[str, EncodedTensor]] = []
    for name, array in tensors.items():
        if not isinstance(name, str):
            raise SlimkitError(f"tensor name {name!r} is not a string", "name every tensor with a str key")
        encoded.append((name, encode_tensor(np.asarray(array), name)))

    squeezed = zlib.compress(bytes(structure), 9)
    table = []
    offset = len(squeezed)
    for name, enc in encoded:
        st = enc.stats
        table.append({"n": name, "d": st.dtype, "s": list(st.shape), "e": enc.encoding, "o": offset,
                      "l": len(enc.data)})
        offset += len(enc.data)
    header = {
        "coder": CODER,
        "meta": metadata or {},
        "structure": {"kind": structure_kind, "z": "zlib", "o": 0, "l": len(squeezed), "raw": len(structure)},
        "tensors": table,
    }
    try:
        header_json = json.dumps(header, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SlimkitError(
            f"archive metadata for {path} is not plain JSON: {exc}",
            "pass metadata made of str/int/float/bool/None, lists and dicts with str keys",
        ) from exc
    header_bytes = zlib.compress(header_json.encode("utf-8"), 9)
    total = PRELUDE_SIZE + len(header_bytes) + offset + DIGEST_SIZE
    digest = hashlib.sha256()
    chunks = [_PRELUDE.pack(MAGIC, VERSION, 0, 0, total, len(header_bytes)), header_bytes, squeezed]
    chunks += [enc.data for _, enc in encoded]
    for chunk in chunks:
        digest.update(chunk)
    chunks.append(digest.digest())

    write_atomic(path, chunks)

    per_tensor = [enc.stats.as_dict() for _, enc in encoded]
    raw = sum(t["raw_bytes"] for t in per_tensor)
    return {
        "path": str(path),
        "archive_bytes": total,
        "tensor_raw_bytes": raw,
        "tensor_encoded_bytes": sum(t["encoded_bytes"] for t in per_tensor),
        "header_bytes": len(header_bytes),
        "structure_bytes": len(squeezed),
        "overhead_bytes": PRELUDE_SIZE + len(header_bytes) + DIGEST_SIZE,
        "ratio": raw / total if total else 0.0,
        "tensors": per_tensor,
    }


def read_archive(path: str | Path) -> Archive:
    """Verify and decode an archive; any defect is a SlimkitError naming the file and what is wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise SlimkitError(f"{path} does not exist", "check the path of the .slim archive") from exc
    except OSError as exc:
        raise SlimkitError(f"cannot read {path}: {exc.strerror}", "check the path and its permissions") from exc
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise _invalid(path, "it does not start with the .slim magic bytes")
    if len(data) < PRELUDE_SIZE + DIGEST_SIZE:
        raise _invalid(path, f"truncated: {len(data)} bytes is shorter than any archive")
    _, version, _, _, total, header_len = _PRELUDE.unpack_from(data)
    if version != VERSION:
        hint = ("it was written by a newer slimkit; upgrade slimkit to read it" if version > VERSION
                else "re-create the archive with this slimkit")
        raise SlimkitError(f"{path} is a .slim archive of format version {version}, this slimkit reads "
                           f"version {VERSION}", hint)
    if len(data) != total:
        why = "truncated" if len(data) < total else "has trailing bytes"
        raise _invalid(path, f"{why}: {len(data)} bytes where the prelude says {total}")
    body = memoryview(data)[:-DIGEST_SIZE]
    if hashlib.sha256(body).digest() != data[-DIGEST_SIZE:]:
        raise _invalid(path, "SHA-256 checksum mismatch (the contents were altered)")
    try:
        return _decode(data, header_len)
    except FormatError as exc:
        raise _invalid(path, str(exc)) from exc
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, zlib.error, UnicodeDecodeError) as exc:
        raise _invalid(path, f"malformed contents ({type(exc).__name__}: {exc})") from exc


def _decode(data: bytes, header_len: int) -> Archive:
    start = PRELUDE_SIZE + header_len
    end = len(data) - DIGEST_SIZE
    if start > end:
        raise FormatError("header runs past the end of the file")
    header = json.loads(zlib.decompress(data[PRELUDE_SIZE:start]).decode("utf-8"))
    if header.get("coder") != CODER:
        raise FormatError(f"unknown symbol coder {header.get('coder')!r}")
    payload = memoryview(data)[start:end]

    def section(off: int, length: int) -> memoryview:
        if not (isinstance(off, int) and isinstance(length, int) and 0 <= off and off + length <= len(payload)
                and length >= 0):
            raise FormatError(f"section ({off}, {length}) lies outside the payload")
        return payload[off:off + length]

    st = header["structure"]
    if st.get("z") != "zlib":
        raise FormatError(f"unknown structure compression {st.get('z')!r}")
    structure = zlib.decompress(section(st["o"], st["l"]))
    if len(structure) != st["raw"]:
        raise FormatError("structure blob has the wrong length")
    tensors: dict[str, np.ndarray] = {}
    for entry in header["tensors"]:
        name = entry["n"]
        if name in tensors:
            raise FormatError(f"tensor '{name}' appears twice")
        try:
            tensors[name] = decode_tensor(section(entry["o"], entry["l"]), encoding=entry["e"],
                                          dtype=entry["d"], shape=tuple(entry["s"]))
        except FormatError as exc:
            raise FormatError(f"tensor '{name}': {exc}") from exc
    return Archive(tensors, structure, st["kind"], header["meta"])
