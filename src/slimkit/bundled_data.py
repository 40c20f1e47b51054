"""Built-in data: sklearn's bundled digits (8x8 images, 10 classes), split once with a fixed seed."""

from __future__ import annotations

import numpy as np

DIGITS_SPLITS = ("train", "test", "fit", "val")


def digits_arrays(split: str = "test", image: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1]; `image=True` gives NCHW [n, 1, 8, 8], else [n, 64]. 75/25 train/test split.

    "fit" and "val" split the train part 85/15, so training can pick its best epoch on "val" and the
    reported accuracy on "test" stays untouched by that choice.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(len(x) * 0.75)
    if split not in DIGITS_SPLITS:
        raise ValueError(f"unknown digits split {split!r}")
    idx = order[cut:] if split == "test" else order[:cut]
    if split in ("fit", "val"):
        inner = int(len(idx) * 0.85)
        idx = idx[:inner] if split == "fit" else idx[inner:]
    x, y = x[idx], y[idx]
    if image:
        x = x.reshape(-1, 1, 8, 8)
    return x, y
