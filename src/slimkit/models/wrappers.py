"""Small `nn.Module` wrappers that give loaded models named tensor inputs and a single tensor output."""

from __future__ import annotations

import torch
from torch import nn


class NamedInputs(nn.Module):
    """Calls a module that takes positional inputs with keyword inputs in a fixed order."""

    def __init__(self, inner: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.inner = inner
        self.names = list(names)

    def forward(self, *args, **kwargs):
        ordered = list(args) + [kwargs[n] for n in self.names[len(args):]]
        return self.inner(*ordered)


class SentenceEmbedder(nn.Module):
    """A transformer encoder plus sentence-transformers pooling (mean or CLS) and optional L2 norm.

    Reimplemented (a few lines) instead of calling sentence-transformers so the whole thing is one
    traceable module that exports to ONNX with the pooling inside.
    """

    def __init__(self, encoder: nn.Module, pooling: str = "mean", normalize: bool = True,
                 input_names: tuple[str, ...] = ("input_ids", "attention_mask")) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.normalize = normalize
        self.input_names = list(input_names)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs)[0]
        if self.pooling == "cls":
            emb = hidden[:, 0]
        elif self.pooling == "max":
            masked = hidden.masked_fill(attention_mask.unsqueeze(-1) == 0, -1e9)
            emb = masked.max(dim=1).values
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        return emb


class FirstOutput(nn.Module):
    """Returns only the first output of a Hugging Face model (logits or last hidden state)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.inner(**kwargs)[0]
