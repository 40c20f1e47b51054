"""How many positions (tokens) a text model can take, and the sequence length a run uses because of it.

A Hugging Face model with learned position embeddings fails on longer sequences with a bare shape error
deep inside PyTorch or ONNX Runtime. slimkit reads the limit from the model's config, keeps it on the
model (`WorkingModel.max_positions`, carried through every pass), records it in the ONNX models and
sidecars it writes, and checks a run's sequence length against it before any work.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from slimkit.errors import SlimkitError

DEFAULT_SEQUENCE = 128  # tokens a text input is padded to when neither the user nor the model says

ONNX_KEY = "slimkit.max_positions"

# Architectures whose position ids start after the padding index (RoBERTa's scheme): `max_position_embeddings`
# counts padding_idx + 1 slots that a sequence never uses (514 rows -> 512 tokens for roberta-base).
_PADDING_OFFSET_TYPES = frozenset({
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer", "ibert",
    "roberta-prelayernorm", "xmod", "luke", "lilt", "markuplm", "layoutlmv3", "mpnet",
})
_FIXED_PADDING_IDX = {"mpnet": 1}  # MPNet's embeddings hard-code padding_idx = 1, whatever pad_token_id says


def hf_max_positions(config: Mapping[str, Any]) -> int | None:
    """Tokens a Transformers model takes at most, from its config.json (None when the config sets no limit)."""
    positions = config.get("max_position_embeddings", config.get("n_positions"))
    if not isinstance(positions, int) or isinstance(positions, bool) or positions <= 0:
        return None
    model_type = str(config.get("model_type", "")).replace("_", "-")
    if model_type in _PADDING_OFFSET_TYPES:
        pad = _FIXED_PADDING_IDX.get(model_type, config.get("pad_token_id"))
        if isinstance(pad, int) and 0 <= pad < positions - 1:
            positions -= pad + 1
    return positions


def onnx_max_positions(proto) -> int | None:
    """The limit slimkit recorded in an ONNX model's metadata_props, if any."""
    for prop in proto.metadata_props:
        if prop.key == ONNX_KEY:
            try:
                value = int(prop.value)
            except ValueError:
                return None
            return value if value > 0 else None
    return None


def record_in_onnx(proto, limit: int | None) -> None:
    """Set (or replace) the limit in an ONNX model's metadata_props; nothing when the limit is unknown."""
    if not limit:
        return
    for prop in proto.metadata_props:
        if prop.key == ONNX_KEY:
            prop.value = str(limit)
            return
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_KEY, str(limit)


def model_limit(models: Any) -> int | None:
    """The smallest known limit among one model or several (None when none of them has one)."""
    items = models if isinstance(models, Sequence) else [models]
    limits = [m.max_positions for m in items if m is not None and getattr(m, "max_positions", None)]
    return min(limits) if limits else None


def too_long_message(length: int, limit: int) -> str:
    return f"sequence of {length} tokens is longer than the model's {limit} positions"


def resolve_seq_len(models: Any, requested: int | None, say: Callable[[str], None] | None = None,
                    notes: list[str] | None = None) -> int:
    """The sequence length a run uses: `requested`, or the default (128) cut to the model's limit.

    An explicit length over the limit is refused here, before any work. When the default is cut, one line
    goes to `say` and, when given, to `notes` (the report's notes).
    """
    limit = model_limit(models)
    if requested is None:
        if limit is None or limit >= DEFAULT_SEQUENCE:
            return DEFAULT_SEQUENCE
        line = (f"sequence length {limit}: the model has {limit} positions "
                f"(the default {DEFAULT_SEQUENCE} is longer)")
        if say is not None:
            say(line)
        if notes is not None:
            notes.append(line)
        return limit
    try:  # an int or a numpy integer; not a float or a bool
        length = -1 if isinstance(requested, bool) else operator.index(requested)
    except TypeError:
        length = -1
    if length < 1:
        raise SlimkitError(f"--seq-len {requested} is not a sequence length", "give 1 or more")
    requested = length
    if limit is not None and requested > limit:
        raise SlimkitError(too_long_message(requested, limit), f"use --seq-len {limit} or less")
    return requested


def sequence_error(limit: int | None, feed: Mapping[str, np.ndarray]) -> SlimkitError | None:
    """The specific error for a feed longer than the model's limit (None when that is not what went wrong)."""
    if not limit:
        return None
    lengths = [v.shape[1] for v in feed.values() if isinstance(v, np.ndarray) and v.ndim >= 2]
    if not lengths or max(lengths) <= limit:
        return None
    return SlimkitError(too_long_message(max(lengths), limit),
                        f"give the model at most {limit} tokens (--seq-len {limit}, or shorter data)")
