"""Pruning benchmark, structured part: does removing units make the model really faster?

At a 50% MAC reduction (`prune-structured` with target_flop_reduction 0.5, no fine-tuning):
- digits CNN (channels), batch 32; accuracy before/after on sklearn digits;
- all-MiniLM-L6-v2 (attention heads + FFN neurons), batch 1, sequence 128; mean embedding cosine vs the
  original on held-out sentences.
Both exported with slimkit's to-onnx pass and timed in ONNX Runtime (interleaved rounds, p50), original vs
pruned, plus a variant with `round_to` (GEMM-friendlier unit counts). Reported: MAC reduction, speedup,
speedup / FLOP reduction (the goal is >= 0.8).

    .venv/bin/python benchmarks/bench_pruning.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from slimkit.data_sources import load_data, text_data  # noqa: E402
from slimkit.demo_models import minilm_path, sentences, trained_digits_model  # noqa: E402
from slimkit.evaluate.fidelity import accuracy, compare_outputs  # noqa: E402
from slimkit.evaluate.measure import compare_latency  # noqa: E402
from slimkit.formats import (
    load,  # noqa: E402
    make_runner,  # noqa: E402
)
from slimkit.passes.base import Context  # noqa: E402
from slimkit.passes.prune_structured import PruneStructured  # noqa: E402
from slimkit.pipeline import load_recipe, run_pipeline  # noqa: E402
from slimkit.report.environment import environment  # noqa: E402
from slimkit.settings import MeasureSettings  # noqa: E402


def prune_and_export(torch_model, config: dict, ctx: Context):
    t0 = time.perf_counter()
    result = PruneStructured(config).run(torch_model, ctx)
    seconds = time.perf_counter() - t0
    onnx_model = run_pipeline(result.model, load_recipe("onnx"), ctx).model
    stats = {k: v for k, v in result.stats.items() if k not in ("per_layer", "search")}
    stats["kept_per_layer"] = {x["layer"]: f"{x['kept']}/{x['total']}" for x in result.stats["per_layer"]}
    stats["prune_seconds"] = seconds
    return onnx_model, stats


def speed_rows(p50: dict, variants: dict) -> dict:
    rows = {}
    for name, stats in variants.items():
        flop_reduction = 1 / (1 - stats["mac_reduction"])  # e.g. 2.0 at a 50% MAC reduction
        speedup = p50["original"] / p50[name]
        rows[name] = {"mac_reduction": stats["mac_reduction"], "flop_speedup_expected": flop_reduction,
                      "measured_speedup": speedup, "speedup_over_flop_reduction": speedup / flop_reduction}
    return rows


def digits(args) -> dict:
    torch_model = load(trained_digits_model("cnn", cache_dir=Path(".cache")), task="classification")
    ctx = Context(workdir=Path(tempfile.mkdtemp(prefix="bp-digits-")), settings=MeasureSettings(threads=args.threads),
                  train_data="sklearn:digits:fit", data="sklearn:digits:val")  # reported on the test split
    base = run_pipeline(torch_model, load_recipe("onnx"), ctx).model
    models, variants = {"original": base}, {}
    # Uniform ratios (searched to 50% MACs), and halving the channels that feed the big conv (its input side)
    # plus the first dense layer, in multiples of 16, with 10 epochs of recovery fine-tuning.
    feeding = {"layers": ["features.0", "head.1"], "ratio": 0.5, "round_to": 16,
               "train": {"epochs": 10, "lr": 1e-3}}
    for name, extra in (("pruned", {"target_flop_reduction": 0.5}),
                        ("pruned_round8", {"target_flop_reduction": 0.5, "round_to": 8}),
                        ("pruned_feeding_round16_finetuned", feeding)):
        models[name], variants[name] = prune_and_export(torch_model, {"target": "channels", **extra}, ctx)
    test = load_data("sklearn:digits", base, batch_size=32)
    accs = {}
    for name, model in models.items():
        runner = make_runner(model, args.threads)
        accs[name] = accuracy([runner.run(b.feed)[0] for b in test], [b.labels for b in test])
    p50 = compare_latency(models, test.batches[0].feed, threads=args.threads, rounds=args.rounds, min_seconds=0.5)
    return {"batch": 32, "accuracy": accs, "p50_ms": p50, "speed": speed_rows(p50, variants), "pruning": variants}


def minilm(args) -> dict:
    torch_model = load(minilm_path())
    ctx = Context(workdir=Path(tempfile.mkdtemp(prefix="bp-minilm-")), settings=MeasureSettings(threads=args.threads))
    base = run_pipeline(torch_model, load_recipe("onnx"), ctx).model
    models, variants = {"original": base}, {}
    for name, extra in (("pruned", {}), ("pruned_round16", {"round_to": 16})):
        models[name], variants[name] = prune_and_export(
            torch_model, {"target": "all", "target_flop_reduction": 0.5, **extra}, ctx)
    data = text_data(sentences("eval", args.eval_sentences), base, batch_size=1, seq_len=128)
    ref_runner = make_runner(base, args.threads)
    refs = [ref_runner.run(b.feed)[0] for b in data]
    fidelity = {}
    for name in variants:
        runner = make_runner(models[name], args.threads)
        outs = [runner.run(b.feed)[0] for b in data]
        fid = compare_outputs(refs, outs)
        fidelity[name] = {"cosine_mean": fid["cosine_mean"], "cosine_min": fid["cosine_min"],
                          "embedding_dim": int(outs[0].shape[-1])}
    p50 = compare_latency(models, data.batches[0].feed, threads=args.threads, rounds=args.rounds, min_seconds=0.5)
    return {"batch": 1, "sequence": 128, "fidelity": fidelity, "p50_ms": p50, "speed": speed_rows(p50, variants),
            "pruning": variants}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-sentences", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/out/pruning.json")
    args = parser.parse_args()
    structured = {"digits_cnn": digits(args), "minilm": minilm(args) if minilm_path() else None}
    result = {"date": time.strftime("%Y-%m-%d"), "environment": environment(args.threads), "structured": structured}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
