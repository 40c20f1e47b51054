"""OpenVINO precision and NNCF int8 against the peers, one run, interleaved (issue 12).

MiniLM (all-MiniLM-L6-v2), batch 1, sequence 128, 2 threads: every artifact's p50 as a ratio to ONNX Runtime
fp32 on the plain export, measured in the same interleaved rounds; fidelity (cosine of embeddings) against the
PyTorch model on evaluation sentences that no calibration saw. Peers with their defaults, in this process:
ONNX Runtime `quantize_dynamic` per-channel, OpenVINO's defaults on the ONNX file, and OpenVINO + NNCF
`nncf.quantize` with defaults on 300 calibration sentences. Then the digits CNN at batch 32: OpenVINO int8
(NNCF, calibrated on training images) against fp32 and ONNX Runtime int8, accuracy on the test split.

    .venv/bin/python benchmarks/bench_openvino.py [--eval-sentences 256] [--rounds 7]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from machine import print_machine

from slimkit.demo_models import minilm_path, sentences, trained_digits_model
from slimkit.evaluate.measure import Evaluator
from slimkit.formats import load
from slimkit.hardware import hardware_plan, import_openvino
from slimkit.models.base import OpenVinoModel
from slimkit.passes.base import Context
from slimkit.passes.quantize import quiet_quantizer
from slimkit.pipeline import load_recipe, run_pipeline
from slimkit.quiet import quiet_native
from slimkit.report.flags import ratios
from slimkit.settings import MeasureSettings

SLIMKIT_MINILM = ("int8-dynamic", "openvino", "openvino-int8", "openvino-int8-weight", "openvino-int4-weight")


def ort_quantize_dynamic_per_channel(onnx_model, work: Path):
    from onnxruntime.quantization import quantize_dynamic

    with quiet_quantizer():
        quantize_dynamic(str(onnx_model.path), str(work / "ortq.onnx"), per_channel=True)
    return load(work / "ortq.onnx")


def nncf_defaults(onnx_model, feeds: list[dict], work: Path) -> OpenVinoModel:
    """What an OpenVINO user does: read the ONNX file, nncf.quantize with defaults, save."""
    import nncf

    ov = import_openvino()
    with quiet_native("NNCF"):
        quantized = nncf.quantize(ov.Core().read_model(str(onnx_model.path)), nncf.Dataset(feeds))
    ov.save_model(quantized, str(work / "nncf.xml"))
    model = OpenVinoModel(path=work / "nncf.xml")
    model.carry_over(onnx_model)
    return model


def table(title: str, measured, base_label: str, extra_base: str | None = None) -> None:
    by = {m.label: m.as_dict() for m in measured}
    base = by[base_label]
    print(f"\n{title}")
    head = "| artifact | runtime | size MB | p50 ms | p50 vs " + base_label + " (IQR) |"
    head += f" vs {extra_base} |" if extra_base else ""
    print(head + " cosine mean / min | accuracy |")
    print("|---|---|---:|---:|---:|" + ("---:|" if extra_base else "") + "---|---:|")
    for label, m in by.items():
        rel = ratios(m, base) if label != base_label else {"p50_ratio": 1.0, "p50_ratio_spread": [1.0, 1.0]}
        spread = rel.get("p50_ratio_spread") or [float("nan")] * 2
        fid = m.get("fidelity") or {}
        acc = (m.get("metrics") or {}).get("accuracy")
        row = (f"| {label} | {m['runtime']} | {m['size_bytes'] / 1e6:.1f} | {m['latency_ms']['p50']:.3f} | "
               f"{rel['p50_ratio']:.3f} ({spread[0]:.3f}-{spread[1]:.3f}) |")
        if extra_base:
            row += f" {ratios(m, by[extra_base]).get('p50_ratio', float('nan')):.3f} |"
        row += (f" {fid.get('cosine_mean', float('nan')):.5f} / {fid.get('cosine_min', float('nan')):.5f} |"
                f" {'' if acc is None else f'{100 * acc:.2f}%'} |")
        print(row, flush=True)


def minilm(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="bov-"))
    torch_model = load(minilm_path())
    calib, evaluation = work / "calib.txt", work / "eval.txt"
    calib.write_text("\n".join(sentences("calib", 300)))
    evaluation.write_text("\n".join(sentences("eval", args.eval_sentences)))
    ctx = Context(workdir=work / "w", data=str(calib), settings=MeasureSettings(threads=args.threads))
    plain = run_pipeline(torch_model, load_recipe("onnx"), ctx).model
    entries = [("ORT fp32 (plain export)", plain)]
    entries.append(("peer: ORT quantize_dynamic per-channel", ort_quantize_dynamic_per_channel(plain, work)))
    peer_ov = OpenVinoModel(path=plain.path)
    peer_ov.carry_over(plain)
    entries.append(("peer: OpenVINO defaults", peer_ov))
    from slimkit.data_sources import load_data

    feeds = [b.feed for b in load_data(str(calib), plain, batch_size=1, seq_len=128).batches]
    entries.append(("peer: OpenVINO + NNCF int8 defaults", nncf_defaults(plain, feeds, work)))
    for recipe in SLIMKIT_MINILM:
        entries.append((f"slimkit {recipe}", run_pipeline(torch_model, load_recipe(recipe), ctx).model))
    evaluator = Evaluator(str(evaluation), reference=torch_model, like=plain, settings=MeasureSettings(threads=args.threads, batch_size=1, seq_len=128),
                          latency_rounds=args.rounds, round_seconds=0.5, round_runs=5)
    table(f"MiniLM, batch 1, sequence 128, {args.eval_sentences} evaluation sentences", evaluator.measure_all(entries),
          "ORT fp32 (plain export)")


def digits(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="bovd-"))
    cnn = load(trained_digits_model("cnn", cache_dir=work / "cache"), task="classification")
    ctx = Context(workdir=work / "w", data="sklearn:digits:fit", settings=MeasureSettings(threads=args.threads, batch_size=32))
    entries = [(name, run_pipeline(cnn, load_recipe(recipe), ctx).model) for name, recipe in (
        ("ORT fp32", "onnx"), ("ORT int8 (int8-static)", "int8-static"), ("OpenVINO", "openvino"),
        ("OpenVINO int8 (NNCF)", "openvino-int8"))]
    evaluator = Evaluator("sklearn:digits:test", reference=cnn, settings=MeasureSettings(threads=args.threads, batch_size=32),
                          latency_rounds=args.rounds, round_seconds=0.3, round_runs=20)
    table("Digits CNN, batch 32, 450 test images (calibrated on the fit split)", evaluator.measure_all(entries),
          "ORT fp32", extra_base="ORT int8 (int8-static)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--eval-sentences", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args()
    print_machine()
    plan = hardware_plan()
    print(f"OpenVINO capabilities: {plan['openvino_capabilities']}; default precision {plan['openvino_precision']}"
          f" ({plan['openvino_precision_reason']}); int8 kernels: {plan['int8_kernels']}")
    digits(args)
    if not args.skip_minilm:
        minilm(args)


if __name__ == "__main__":
    main()
