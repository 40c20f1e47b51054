"""Every built-in recipe on a Keras CNN (.h5) and a Keras MLP (.keras), each report's accuracy (issue 6).

Runs `slimkit.api.optimize` exactly as a user would on the saved Keras files, with three disjoint digits
splits: the Keras models and the training passes learn from "fit" (--train-data), passes that choose or
calibrate (best epoch, int8-auto's selection, int8-static's calibration) use "val" (--data), and accuracy is
reported on all of "test" (eval_data), which nothing has seen. Records accuracy of the original and the
result, the artifact size against the Keras file on disk (and against the fp32 parameter bytes, what the
report counts as the Keras model's size), or the one-line error a recipe gives when it does not apply.

    .venv/bin/python benchmarks/bench_keras_recipes.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_keras import nhwc, train_cnn  # noqa: E402
from machine import print_machine  # noqa: E402

from slimkit.api import optimize  # noqa: E402
from slimkit.bundled_data import digits_arrays  # noqa: E402
from slimkit.errors import SlimkitError  # noqa: E402
from slimkit.models.keras import import_keras  # noqa: E402
from slimkit.pipeline import builtin_recipes  # noqa: E402
from slimkit.settings import MeasureSettings, TrainSettings  # noqa: E402


def train_mlp(path: Path):
    keras = import_keras()
    keras.utils.set_random_seed(0)
    x, y = digits_arrays("fit")
    inputs = keras.Input((64,), name="x")
    h = keras.layers.Dense(128, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, batch_size=64, verbose=0)
    model.save(path)


def main() -> int:
    print_machine()
    root = Path(tempfile.mkdtemp(prefix="bkr-"))
    train_cnn(root / "cnn.h5", epochs=10, split="fit")
    train_mlp(root / "mlp.keras")
    for split in ("fit", "val", "test"):
        x, y = digits_arrays(split, image=True)
        np.savez(root / f"cnn-{split}.npz", image=nhwc(x), labels=y)
        x, y = digits_arrays(split)
        np.savez(root / f"mlp-{split}.npz", x=x, labels=y)
    file_bytes = {model: (root / model).stat().st_size for model in ("cnn.h5", "mlp.keras")}
    print(f"Keras files: {file_bytes} B", flush=True)
    rows = []
    for model in ("cnn.h5", "mlp.keras"):
        stem = model.split(".")[0]
        for recipe in sorted(builtin_recipes()):
            t0 = time.perf_counter()
            try:
                result = optimize(root / model, recipe, settings=MeasureSettings(max_samples=None), training=TrainSettings(data=str(root / f"{stem}-fit.npz")),
                                  data=str(root / f"{stem}-val.npz"), eval_data=str(root / f"{stem}-test.npz"),
                                  output=root / "out" / stem / recipe)
                original, optimized = result.measurements
                row = {"accuracy_original": original.metrics.get("accuracy"),
                       "accuracy": optimized.metrics.get("accuracy"),
                       "eval_samples": optimized.data.get("samples"),
                       "artifact_bytes": optimized.size_bytes,
                       "size_ratio_to_keras_file": optimized.size_bytes / file_bytes[model],
                       "size_ratio_to_fp32_params": optimized.size_bytes / max(original.size_bytes, 1),
                       "kind": str(result.model.kind)}
            except SlimkitError as exc:
                row = {"error": str(exc)}
            rows.append({"model": model, "recipe": recipe, "seconds": round(time.perf_counter() - t0, 1), **row})
            print(json.dumps(rows[-1]), flush=True)
    out = Path("benchmarks/out/keras_recipes.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
