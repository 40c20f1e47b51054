"""Deep Compression held out (issue 10, items 1 and 3): archive size and accuracy on a test split nothing saw.

Two cases, both measured on a test split that neither training, nor epoch selection, nor the back-off saw:

- **A user's own MLP**: a LeNet-300-100-shaped `nn.Module` (input named `input`) written in a user module,
  trained by the "user" on their own 70/30 split of digits (another seed than slimkit's), given to the real
  CLI as `user_mlp:make --weights w.safetensors --recipe deep-compression --data train.npz --eval-data test.npz`
  with and without `--max-drop 0.005`; the `.slim` archive is loaded back and scored on test.npz here.
- **The zoo MLP over 3 seeds**: `trained_digits_model("mlp", seed=s)`, `slimkit.optimize(..., data=
  "sklearn:digits:train", eval_data="sklearn:digits:test")`, plain recipe and with `max_drop=0.005`.

`--data` is split by slimkit (80/20, seeded, stratified) into training and validation parts; the back-off
(sparsity 95% -> 92.5% -> ..., clusters 16 -> 32 -> ...) checks the drop on the validation part only.

    .venv/bin/python benchmarks/bench_deep_compression.py [--seeds 0 1 2] [--max-drop 0.005]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from machine import print_machine  # noqa: E402

import slimkit  # noqa: E402
from slimkit.bundled_data import digits_arrays  # noqa: E402
from slimkit.demo_models import trained_digits_model  # noqa: E402
from slimkit.formats import (
    load,  # noqa: E402
    make_runner,  # noqa: E402
)
from slimkit.settings import TrainSettings  # noqa: E402

CACHE = Path(".cache")  # the zoo models train deterministically per seed, so caching them changes nothing

USER_MODULE = '''
import torch
from torch import nn


class UserMLP(nn.Module):
    """LeNet-300-100 on 8x8 digits, as a user might write it."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, input):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(input)))))


def make():
    return UserMLP()
'''


def user_split(seed: int = 42) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The user's own 70/30 split of digits (not slimkit's), pixel values scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(x, digits.target.astype(np.int64), test_size=0.3, random_state=seed)


def train_user_model(folder: Path) -> float:
    """Train the user's MLP with plain SGD + momentum on their train split; returns its test accuracy."""
    from safetensors.torch import save_file

    sys.path.insert(0, str(folder))
    import user_mlp

    x_tr, x_te, y_tr, y_te = user_split()
    np.savez(folder / "train.npz", input=x_tr, labels=y_tr)
    np.savez(folder / "test.npz", input=x_te, labels=y_te)
    torch.manual_seed(7)
    model = user_mlp.make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    gen = torch.Generator().manual_seed(7)
    for _ in range(40):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "w.safetensors"))
    with torch.inference_mode():
        return float((model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())


def archive_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the model restored from the .slim archive (as a user would deploy it)."""
    runner = make_runner(slimkit.load(str(path)), 2)
    name = runner.input_specs[0].name
    return float((runner.run({name: x})[0].argmax(1) == y).mean())


def summary(run: dict) -> dict:
    passes = {p["pass"]: p for p in run["passes"]}
    slim = passes["to-slim"]["stats"]
    chosen = {name: (passes[name]["stats"].get("backoff") or {}).get("chosen") for name in ("prune", "cluster")}
    return {"archive_bytes": slim["archive_bytes"], "fp32_weight_bytes": slim["fp32_weight_bytes"],
            "compression": slim["compression_vs_fp32_weights"], "backoff": chosen,
            "validation": {name: (passes[name]["stats"].get("backoff") or {}).get("attempts")
                           for name in ("prune", "cluster")},
            "data": run.get("data")}


def user_case(max_drop: float | None) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="bdc-user-"))
    (folder / "user_mlp.py").write_text(USER_MODULE)
    original = train_user_model(folder)
    x_te, y_te = np.load(folder / "test.npz")["input"], np.load(folder / "test.npz")["labels"]
    out = folder / "out"
    cmd = [sys.executable, "-m", "slimkit.cli", "optimize", "user_mlp:make", "--weights", "w.safetensors",
           "--recipe", "deep-compression", "--data", "train.npz", "--eval-data", "test.npz", "-o", str(out),
           "--json"] + (["--max-drop", str(max_drop)] if max_drop is not None else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(folder)})
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        raise RuntimeError(proc.stderr[-2000:])
    report = json.loads(proc.stdout)["report"]
    compressed = archive_accuracy(out / "model.slim", x_te, y_te)
    return {"case": "user MLP", "max_drop": max_drop, "exit_code": proc.returncode, "seconds": round(seconds, 1),
            "test_samples": int(len(y_te)), "accuracy_original": original, "accuracy_compressed": compressed,
            "drop_points": 100 * (original - compressed), **summary(report)}


def zoo_case(seed: int, max_drop: float | None) -> dict:
    teacher = load(trained_digits_model("mlp", CACHE, seed=seed), task="classification")
    folder = Path(tempfile.mkdtemp(prefix=f"bdc-zoo{seed}-"))
    t0 = time.perf_counter()
    result = slimkit.optimize(teacher, "deep-compression", data="sklearn:digits:train",
                              eval_data="sklearn:digits:test", max_drop=max_drop, output=folder / "out",
                              training=TrainSettings(checkpoint_dir=folder / "ck"))
    seconds = time.perf_counter() - t0
    x, y = digits_arrays("test")
    original = float((teacher.module(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    compressed = archive_accuracy(folder / "out" / "model.slim", x, y)
    return {"case": f"zoo MLP seed {seed}", "max_drop": max_drop, "seconds": round(seconds, 1),
            "test_samples": int(len(y)), "accuracy_original": original, "accuracy_compressed": compressed,
            "drop_points": 100 * (original - compressed), **summary(result.report)}


def aggregate(rows: list[dict]) -> dict:
    drops = [r["drop_points"] for r in rows]
    ratios = [r["compression"] for r in rows]
    return {"drop_points_mean": statistics.mean(drops), "drop_points_min": min(drops), "drop_points_max": max(drops),
            "compression_mean": statistics.mean(ratios), "compression_min": min(ratios),
            "compression_max": max(ratios)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-drop", type=float, default=0.005)
    parser.add_argument("--out", default="benchmarks/out/deep_compression.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": print_machine(), "rows": []}
    for max_drop in (args.max_drop, None):
        rows = [user_case(max_drop)] + [zoo_case(seed, max_drop) for seed in args.seeds]
        for row in rows:
            print(json.dumps({k: v for k, v in row.items() if k not in ("validation", "data")}, default=str),
                  flush=True)
        zoo = [r for r in rows if r["case"].startswith("zoo")]
        agg = aggregate(zoo)
        print(f"zoo MLP over seeds {args.seeds}, max_drop={max_drop}: {json.dumps(agg)}", flush=True)
        result["rows"].extend(rows)
        result[f"zoo_aggregate_max_drop_{max_drop}"] = agg
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
