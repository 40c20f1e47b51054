"""Keras models (issue 6): the four TensorFlow optimization snippets reproduced on a Keras CNN, one run.

A Keras 3 CNN (Conv2D 16, BatchNormalization, MaxPooling, Conv2D 32, Dropout, Dense 10 softmax; 9,994 params) is
trained on the sklearn digits train split (NHWC) and saved as `.h5`. slimkit then produces, from that file:

- fp32 ONNX (the baseline the ratios are computed against) and fp32 TFLite (`convert --to tflite`,
  litert-torch);
- fp16: the `fp16` recipe (fp16 ONNX) and an fp16-weight TFLite file: litert-torch has no fp16 option, so
  the fp32 flatbuffer is post-processed with ai-edge-quantizer's `float_casting` (weights stored fp16,
  dequantized at load), which is what TF's `supported_types = [tf.float16]` produces;
- `cluster-16` (k-means weight sharing, 4-bit packed indices in the ONNX file);
- `svd-ratio-0.5` (truncated SVD at half the parameters of each layer, no fine-tuning);
- `prune-50` (50% magnitude pruning, bit mask + values in the file, no fine-tuning);
- back to `.keras` after `cluster` (k=16) and `prune` (50%) on the PyTorch form (pass `to-keras`).

Each artifact: file size and its ratio to the fp32 ONNX file, to the `.h5` file on disk (what the user
starts from: weights, optimizer state and model config) and to the fp32 parameter bytes (params x 4 B, what
slimkit's report counts as the Keras model's size), p50 latency at batch 1 on its own runtime
(ONNX Runtime / LiteRT, 2 threads, interleaved rounds), test accuracy on the digits test split.
The eager Keras model is not timed (Python overhead per layer makes it meaningless).

    KERAS_BACKEND=torch .venv/bin/python benchmarks/bench_keras.py [--rounds 7] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from machine import print_machine  # noqa: E402

from slimkit.api import convert, optimize  # noqa: E402
from slimkit.bundled_data import digits_arrays  # noqa: E402
from slimkit.evaluate.measure import compare_latency  # noqa: E402
from slimkit.formats import (
    load,  # noqa: E402
    make_runner,  # noqa: E402
)
from slimkit.formats.tflite import TfliteModel  # noqa: E402
from slimkit.models.keras import import_keras  # noqa: E402
from slimkit.passes.base import Context, get_pass  # noqa: E402
from slimkit.report.environment import environment  # noqa: E402


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def train_cnn(path: Path, epochs: int, split: str = "train"):
    """The CNN trained on the digits `split` ("train", or "fit" to keep "val" out of it), saved to `path`."""
    keras = import_keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    x, y = digits_arrays(split, image=True)
    image = keras.Input((8, 8, 1), name="image")
    h = layers.Conv2D(16, 3, padding="same", activation="relu")(image)
    h = layers.BatchNormalization()(h)
    h = layers.MaxPooling2D(2)(h)
    h = layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = layers.Flatten()(h)
    h = layers.Dropout(0.2)(h)
    model = keras.Model(image, layers.Dense(10, activation="softmax")(h))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(nhwc(x), y, epochs=epochs, batch_size=64, verbose=0)
    model.save(path)
    return model


def fp16_tflite(source: Path, target: Path) -> dict:
    """fp16 weights in a TFLite file (the `to-tflite` pass's fp16 step), or why it could not be made."""
    from slimkit.errors import SlimkitError
    from slimkit.formats.tflite import fp16_weights

    try:
        fp16_weights(source, target)
    except SlimkitError as exc:  # report it rather than stop the benchmark
        return {"error": str(exc)}
    return {}


def accuracy(model, x: np.ndarray, y: np.ndarray, name: str) -> float:
    runner = make_runner(model, 2)
    try:
        probs = runner.run({name: x})[0]
    except Exception:  # static batch (TFLite): one sample at a time
        probs = np.concatenate([runner.run({name: x[i:i + 1]})[0] for i in range(len(x))])
    return float((np.asarray(probs).argmax(1) == y).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "keras.json"))
    args = parser.parse_args()
    print_machine()
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="bench-keras-"))
    h5 = work / "cnn.h5"
    keras_model = train_cnn(h5, args.epochs)
    x_test, y_test = digits_arrays("test", image=True)
    x_test = nhwc(x_test)
    np.savez(work / "test.npz", image=x_test, labels=y_test)
    keras_accuracy = float((keras_model.predict(x_test, verbose=0).argmax(1) == y_test).mean())
    h5_bytes = h5.stat().st_size
    param_bytes = 4 * int(keras_model.count_params())  # every weight is fp32
    print(f"Keras CNN: {keras_model.count_params()} params ({param_bytes} B fp32), .h5 file {h5_bytes} B, "
          f"test accuracy {keras_accuracy:.4f}", flush=True)

    artifacts: dict = {}
    notes: dict = {}

    def add(label: str, how: str, make) -> None:
        t = time.time()
        try:
            model = make()
        except Exception as exc:
            notes[label] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            print(f"{label}: {notes[label]}", flush=True)
            return
        artifacts[label] = {"model": model, "how": how, "seconds_to_make": round(time.time() - t, 1)}
        print(f"{label}: made in {time.time() - t:.1f} s", flush=True)

    add("fp32 ONNX", "slimkit convert cnn.h5 --to onnx",
        lambda: load(convert(h5, "onnx", output=work / "fp32" / "model.onnx", data=str(work / "test.npz"))[0]))
    add("fp32 TFLite", "slimkit convert cnn.h5 --to tflite",
        lambda: load(convert(h5, "tflite", output=work / "tfl" / "model.tflite", data=str(work / "test.npz"))[0]))

    def make_fp16_tflite():
        target = work / "tfl16" / "model.tflite"
        target.parent.mkdir()
        outcome = fp16_tflite(work / "tfl" / "model.tflite", target)
        if outcome.get("error"):
            raise RuntimeError(outcome["error"])
        return TfliteModel(path=target, task="classification", input_names=["image"])

    add("fp16 TFLite", "fp32 TFLite + ai-edge-quantizer float_casting (fp16 weights)", make_fp16_tflite)
    for recipe in ("fp16", "cluster-16", "svd-ratio-0.5", "prune-50"):
        add(f"recipe {recipe}", f"slimkit optimize cnn.h5 --recipe {recipe}",
            lambda r=recipe: optimize(h5, r, data=str(work / "test.npz"), output=work / r, measure=False).model)

    # Back to .keras: the in-place passes on the PyTorch form, then to-keras.
    import slimkit.passes.to_keras  # noqa: F401  (registers to-keras until it is a builtin pass)

    keras_files: dict = {}
    for label, step, config in (("cluster k=16 -> .keras", "cluster", {"k": 16, "min_params": 100}),
                                ("prune 50% -> .keras", "prune", {"sparsity": 0.5, "min_params": 100})):
        try:
            ctx = Context(workdir=work / label.split()[0])
            changed = get_pass(step)(config).run(load(h5), ctx)
            saved = get_pass("to-keras")().run(changed.model, ctx)
            reloaded = import_keras().models.load_model(saved.stats["path"], compile=False)
            keras_files[label] = {
                "layers_changed": changed.stats.get("layers"), "file_bytes": saved.stats["file_bytes"],
                "ratio_to_h5_file": round(saved.stats["file_bytes"] / h5_bytes, 4),
                "kernel_sparsity": saved.stats["kernel_sparsity"],
                "max_distinct_per_kernel": saved.stats["max_distinct_per_kernel"],
                "max_abs_diff_reloaded": saved.stats["max_abs_diff_reloaded"],
                "accuracy": float((reloaded.predict(x_test, verbose=0).argmax(1) == y_test).mean()),
            }
        except Exception as exc:
            keras_files[label] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        print(f"{label}: {keras_files[label]}", flush=True)

    feed = {"image": x_test[:1]}
    latency = compare_latency({k: v["model"] for k, v in artifacts.items()}, feed, threads=2,
                              rounds=args.rounds, min_seconds=0.3)
    base = artifacts["fp32 ONNX"]["model"].size_bytes() if "fp32 ONNX" in artifacts else None
    rows = []
    for label, item in artifacts.items():
        model = item["model"]
        size = model.size_bytes()
        row = {"artifact": label, "how": item["how"], "runtime": "LiteRT" if "TFLite" in label else "ONNX Runtime",
               "file_bytes": size, "ratio_to_fp32_onnx": round(size / base, 4) if base else None,
               "ratio_to_h5_file": round(size / h5_bytes, 4),
               "ratio_to_fp32_param_bytes": round(size / param_bytes, 4),
               "latency_p50_ms": round(latency[label], 4), "accuracy": accuracy(model, x_test, y_test, "image"),
               "seconds_to_make": item["seconds_to_make"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "benchmark": "keras", "model": "Keras 3 CNN on digits (.h5), torch backend",
        "params": int(keras_model.count_params()), "keras_accuracy": keras_accuracy,
        "source_h5_bytes": h5_bytes, "fp32_param_bytes": param_bytes,
        "test_samples": len(y_test), "threads": 2, "batch": 1, "rounds": args.rounds,
        "artifacts": rows, "keras_files": keras_files, "failed": notes,
        "environment": environment(2), "seconds": round(time.time() - started, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out} in {result['seconds']} s")
    return 0 if not notes else 1  # a failed artifact is listed in "failed" and makes the exit code 1


if __name__ == "__main__":
    sys.exit(main())
