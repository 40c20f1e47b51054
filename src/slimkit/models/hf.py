"""Hugging Face Transformers folders (config + safetensors), including sentence-transformers folders.

Only safetensors weights are accepted: a folder with just `pytorch_model.bin` would need pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

from slimkit.errors import SlimkitError, require
from slimkit.models.base import TorchModel
from slimkit.models.limits import hf_max_positions

EXAMPLE_SEQUENCE = 16  # export example length; the sequence dim stays dynamic


def load_hf_folder(path: Path, *, task: str | None = None) -> TorchModel:
    """Load a Transformers folder as a `TorchModel` with named token inputs and one tensor output."""
    _quiet_libraries()
    transformers = require("transformers", "hf")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from slimkit.models.torch_module import read_json, torch_model_from_module
    from slimkit.models.wrappers import FirstOutput, SentenceEmbedder

    config = read_json(path / "config.json")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        if list(path.glob("pytorch_model*.bin")):
            raise SlimkitError(
                f"{path} holds only pickle weights (pytorch_model.bin), which slimkit does not execute",
                "convert them to safetensors (model.save_pretrained(dir, safe_serialization=True))",
            )
        raise SlimkitError(f"{path} has config.json but no .safetensors weights", "save the model with save_pretrained")
    tokenizer = None
    if (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists() or (path / "vocab.txt").exists():
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))

    pooling = _sentence_transformers_pooling(path)
    architectures = config.get("architectures") or []
    try:
        if pooling is not None:
            encoder = transformers.AutoModel.from_pretrained(str(path), attn_implementation="sdpa")
            module = SentenceEmbedder(encoder, pooling=pooling[0], normalize=pooling[1])
            task = task or "embedding"
        elif any(a.endswith("ForSequenceClassification") for a in architectures):
            inner = transformers.AutoModelForSequenceClassification.from_pretrained(str(path))
            module = FirstOutput(inner)
            task = task or "classification"
        else:
            module = FirstOutput(transformers.AutoModel.from_pretrained(str(path)))
    except (OSError, ValueError, KeyError) as exc:
        raise SlimkitError(f"{path}: Transformers cannot load this folder ({exc})", "check config.json") from exc

    module.eval()
    names = ["input_ids", "attention_mask"]
    if tokenizer is not None and "token_type_ids" in tokenizer.model_input_names:
        names.append("token_type_ids")
    example = _example_tokens(tokenizer, names, config)
    model = torch_model_from_module(
        module, example_inputs=example, input_names=names, task=task, source=str(path),
        dynamic_dims={n: {0: "batch", 1: "sequence"} for n in names},
    )
    model.tokenizer_dir = path if tokenizer is not None else None
    model.max_positions = hf_max_positions(config)
    model.source_files = [p for p in path.iterdir() if p.is_file()]
    return model


def _quiet_libraries() -> None:
    """torchao (pulled in by litert-torch) warns about CUDA kernels it cannot load on CPU-only torch."""
    import logging

    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def _sentence_transformers_pooling(path: Path) -> tuple[str, bool] | None:
    """(pooling mode, normalize) from a sentence-transformers folder, or None for a plain model."""
    modules_file = path / "modules.json"
    if not modules_file.exists():
        return None
    modules = json.loads(modules_file.read_text())
    types = [m.get("type", "") for m in modules]
    if not any("Pooling" in t for t in types):
        return None
    mode = "mean"
    for m in modules:
        if "Pooling" in m.get("type", ""):
            cfg_file = path / m.get("path", "1_Pooling") / "config.json"
            if cfg_file.exists():
                cfg = json.loads(cfg_file.read_text())
                if cfg.get("pooling_mode_cls_token"):
                    mode = "cls"
                elif cfg.get("pooling_mode_max_tokens"):
                    mode = "max"
    return mode, any("Normalize" in t for t in types)


def _example_tokens(tokenizer, names, config) -> dict:
    import torch

    if tokenizer is not None:
        enc = tokenizer(["slimkit makes models smaller and faster."], padding="max_length",
                        max_length=EXAMPLE_SEQUENCE, truncation=True, return_tensors="pt")
        return {n: enc[n] for n in names}
    vocab = int(config.get("vocab_size", 1000))
    ids = torch.randint(0, vocab, (1, EXAMPLE_SEQUENCE))
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "token_type_ids" in names:
        example["token_type_ids"] = torch.zeros_like(ids)
    return example
