"""Training-based techniques (issue 5, and issue 4's fine-tuning), one run.

- (Deep Compression moved to bench_deep_compression.py: held-out, 3 seeds, --max-drop back-off.)
- Distillation, Hinton-style: a 64-32-10 student distilled from the trained 64-300-100-10 teacher vs the same
  student trained on labels alone (same engine, epochs, learning rate), 3 seeds, mean and spread of test error.
- Recovery after structured pruning at 50% MACs: digits CNN (fine-tuned with labels + teacher) and
  all-MiniLM-L6-v2 (heads + MLP width, feature distillation on the calibration sentences, cosine measured on
  the held-out evaluation sentences).
- Factorization of the digits MLP at a 0.5 parameter ratio with fine-tuning (issue 4).

    .venv/bin/python benchmarks/bench_training.py [--skip-minilm]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from slimkit.bundled_data import digits_arrays  # noqa: E402
from slimkit.data_sources import text_data  # noqa: E402
from slimkit.demo_models import minilm_path, sentences, small_digits_mlp, trained_digits_model  # noqa: E402
from slimkit.evaluate.fidelity import compare_outputs  # noqa: E402
from slimkit.formats import (
    load,  # noqa: E402
    make_runner,  # noqa: E402
)
from slimkit.passes.base import Context, get_pass  # noqa: E402
from slimkit.report.environment import environment  # noqa: E402
from slimkit.settings import MeasureSettings  # noqa: E402

CACHE = Path(".cache")


def ctx(**kw) -> Context:
    # Training picks its best epoch on "val" (part of the train split); accuracy is reported on "test".
    return Context(train_data="sklearn:digits:fit", data="sklearn:digits:val", settings=MeasureSettings(threads=2),
                   workdir=Path(tempfile.mkdtemp(prefix="bt-")), **kw)


def test_accuracy(model) -> float:
    x, y = digits_arrays("test", image=len(model.input_specs[0].shape) == 4) if hasattr(model, "input_specs") \
        else digits_arrays("test")
    name = model.input_specs[0].name
    return float((make_runner(model, 2).run({name: x})[0].argmax(1) == y).mean())


def val_accuracy(module) -> dict[str, float]:
    """Accuracy on the "val" split: the one set every student in a comparison picks its best epoch on."""
    x, y = digits_arrays("val")
    module.eval()
    with torch.inference_mode():
        pred = module(torch.from_numpy(x)).argmax(1).numpy()
    return {"accuracy": float((pred == y).mean())}


def distillation(seeds=(0, 1, 2), epochs: int = 150, lr: float = 3e-3, alpha: float = 0.0) -> dict:
    from slimkit.models.torch_module import torch_model_from_module
    from slimkit.train import TrainBatch, TrainConfig, fit

    teacher = load(trained_digits_model("mlp", CACHE), task="classification")
    rows = []
    for seed in seeds:
        train = TrainConfig(epochs=epochs, lr=lr, seed=seed)
        torch.manual_seed(seed)
        student = torch_model_from_module(small_digits_mlp(), task="classification")
        distilled = get_pass("distill")({"alpha": alpha, "temperature": 4.0, "train": train.model_dump()}).run(
            student, ctx(reference=teacher)).model
        torch.manual_seed(seed)
        labels_only = torch_model_from_module(small_digits_mlp(), task="classification")
        from slimkit.data_sources import load_data

        data = load_data("sklearn:digits:fit", labels_only, batch_size=32)

        def ce(m, batch: TrainBatch):
            return torch.nn.functional.cross_entropy(m(**batch.feed), batch.labels)

        # Same treatment as the distilled student: best epoch picked on the same "val" split.
        fit(labels_only.module, ce, data, train, evaluate=val_accuracy, score_key="accuracy")
        rows.append({"seed": seed, "distilled_error": 1 - test_accuracy(distilled),
                     "labels_only_error": 1 - test_accuracy(labels_only)})
    d = [r["distilled_error"] for r in rows]
    b = [r["labels_only_error"] for r in rows]
    return {"teacher_error": 1 - test_accuracy(teacher), "student_params": sum(
        p.numel() for p in small_digits_mlp().parameters()), "teacher_params": sum(
        p.numel() for p in teacher.module.parameters()), "epochs": epochs, "lr": lr, "alpha": alpha, "temperature": 4.0,
        "rows": rows, "distilled_mean": statistics.mean(d), "distilled_stdev": statistics.stdev(d),
        "labels_only_mean": statistics.mean(b), "labels_only_stdev": statistics.stdev(b)}


def distillation_few_labels(seeds=(0, 1, 2), fraction: float = 0.1, epochs: int = 150, lr: float = 3e-3) -> dict:
    """The semi-supervised case distillation is made for: only `fraction` of the training images have labels.

    Labels only: the student trained on the labeled subset (same number of optimizer steps). Distilled: the
    student learns the teacher's soft targets on every training image, no labels (alpha 0). Both pick their
    best epoch on the same labelled "val" split, so neither sees more labelled images than the other there.
    """
    from slimkit.data_sources import Batch, Dataset
    from slimkit.models.torch_module import torch_model_from_module
    from slimkit.train import TrainConfig, fit

    teacher = load(trained_digits_model("mlp", CACHE), task="classification")
    x, y = digits_arrays("fit")
    rows = []
    for seed in seeds:
        pick = np.random.default_rng(seed).permutation(len(x))[: int(len(x) * fraction)]
        subset = Dataset([Batch({"x": x[pick]}, y[pick])], "digits train subset")
        torch.manual_seed(seed)
        labels_only = torch_model_from_module(small_digits_mlp(), task="classification")
        fit(labels_only.module, lambda m, b: torch.nn.functional.cross_entropy(m(**b.feed), b.labels), subset,
            TrainConfig(epochs=int(epochs / fraction), lr=lr, seed=seed), evaluate=val_accuracy,
            score_key="accuracy")
        torch.manual_seed(seed)
        student = torch_model_from_module(small_digits_mlp(), task="classification")
        unlabeled = Dataset([Batch({"x": x})], "digits train, labels dropped")
        distilled = get_pass("distill")({"alpha": 0.0, "temperature": 4.0, "train": {"epochs": epochs, "lr": lr,
                                                                                       "seed": seed}}).run(
            student, Context(train_data=unlabeled, data="sklearn:digits:val", reference=teacher, settings=MeasureSettings(threads=2),
                             workdir=Path(tempfile.mkdtemp(prefix="btf-")))).model
        rows.append({"seed": seed, "labels_only_error": 1 - test_accuracy(labels_only),
                     "distilled_error": 1 - test_accuracy(distilled)})
    d = [r["distilled_error"] for r in rows]
    b = [r["labels_only_error"] for r in rows]
    return {"labeled_fraction": fraction, "labeled_samples": int(len(x) * fraction), "rows": rows,
            "distilled_mean": statistics.mean(d), "distilled_stdev": statistics.stdev(d),
            "labels_only_mean": statistics.mean(b), "labels_only_stdev": statistics.stdev(b)}


def structured_recovery_digits() -> dict:
    teacher = load(trained_digits_model("cnn", CACHE), task="classification")
    out = {"original": test_accuracy(teacher)}
    for label, train in (("no fine-tuning", None), ("fine-tuned", {"epochs": 10, "lr": 1e-3})):
        cfg = {"target": "channels", "target_flop_reduction": 0.5, **({"train": train} if train else {})}
        result = get_pass("prune-structured")(cfg).run(teacher, ctx())
        out[label] = {"accuracy": test_accuracy(result.model), "mac_reduction": result.stats.get("mac_reduction")}
    return out


def structured_recovery_minilm(epochs: int) -> dict:
    teacher = load(minilm_path())
    calib = sentences("calib")
    eval_lines = sentences("eval", 256)
    # Train on 900 calibration sentences, pick the best epoch on the other 100; report on the eval split.
    base_ctx = Context(settings=MeasureSettings(threads=2, seq_len=128), workdir=Path(tempfile.mkdtemp(prefix="btm-")), reference=teacher,
                       train_data=text_data(calib[:900], teacher, batch_size=16, seq_len=128),
                       data=text_data(calib[900:], teacher, batch_size=16, seq_len=128))
    evaluation = text_data(eval_lines, teacher, batch_size=16, seq_len=128)
    ref = make_runner(teacher, 2)
    reference = [ref.run(b.feed)[0] for b in evaluation]
    out = {}
    for label, train in (("no recovery", None), ("distilled", {"epochs": epochs, "lr": 3e-4, "batch_size": 16})):
        cfg = {"target": "all", "target_flop_reduction": 0.5, "importance": "activation",
               **({"train": train} if train else {})}
        t0 = time.perf_counter()
        result = get_pass("prune-structured")(cfg).run(teacher, base_ctx)
        runner = make_runner(result.model, 2)
        fid = compare_outputs(reference, [runner.run(b.feed)[0] for b in evaluation])
        out[label] = {"cosine_mean": fid["cosine_mean"], "cosine_min": fid["cosine_min"],
                      "mac_reduction": result.stats.get("mac_reduction"), "seconds": time.perf_counter() - t0}
        if train:
            out[label]["history"] = result.stats["training"]["history"]
    return out


def factorize_finetune() -> dict:
    teacher = load(trained_digits_model("mlp", CACHE), task="classification")
    out = {"original": test_accuracy(teacher)}
    for label, train in (("no fine-tuning", None), ("fine-tuned", {"epochs": 15, "lr": 2e-3})):
        cfg = {"ratio": 0.5, **({"train": train} if train else {})}
        out[label] = test_accuracy(get_pass("factorize")(cfg).run(teacher, ctx()).model)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--minilm-epochs", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/out/training.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = {"date": time.strftime("%Y-%m-%d"), "environment": environment(2)}
    print(describe(), flush=True)
    for name, fn in (("distillation", distillation),
                     ("distillation_few_labels", distillation_few_labels),
                     ("factorize_finetune", factorize_finetune), ("structured_digits", structured_recovery_digits)):
        result[name] = fn()
        print(name, json.dumps(result[name], default=str)[:800], flush=True)
    if not args.skip_minilm and minilm_path():
        result["structured_minilm"] = structured_recovery_minilm(args.minilm_epochs)
        print("structured_minilm", json.dumps(result["structured_minilm"], default=str)[:1500], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
