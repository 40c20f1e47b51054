"""What a user sees on the console: progress lines without a terminal, third-party noise kept out (TFLite),
recipe descriptions printed as written, bench labels that never break mid-path, `bench --json` as JSON Lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from slimkit.bundled_data import digits_arrays
from slimkit.cli import main
from slimkit.errors import SlimkitError

STAMP = re.compile(r"^\[\s*\d+\.\ds\] ")  # "[   12.3s] running pass prune"
NOISE = ("absl", "onednn", "torchao", "warning", "failed to load", "xnnpack", "[start]", "[ done]")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def mlp_factory(digits_mlp, tmp_path):
    """The trained digits MLP as `slimkit.demo_models:DigitsMLP` + safetensors, and labelled digits train/eval files."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in digits_mlp.state_dict().items()}, str(tmp_path / "mlp.safetensors"))
    x, y = digits_arrays("train")
    np.savez(tmp_path / "train.npz", x=x[:256], labels=y[:256])
    x, y = digits_arrays("test")
    np.savez(tmp_path / "eval.npz", x=x[:64], labels=y[:64])
    recipe = tmp_path / "prune-quick.yaml"
    recipe.write_text("name: prune-quick\ndescription: gradual pruning, three short epochs\npasses:\n"
                      "  - pass: prune\n    sparsity: 0.5\n    schedule: gradual\n"
                      "    train: {epochs: 3, batch_size: 64}\n")
    return tmp_path


# ---- 1. progress lines when stderr is not a terminal -----------------------------------------------------


def test_training_prints_progress_lines_without_a_terminal(capsys, mlp_factory, monkeypatch):
    import slimkit.progress

    monkeypatch.setattr(slimkit.progress, "HOLD_S", 0.0)  # this run is short; a real one waits 2 s first
    work = mlp_factory
    code, out, err = run(capsys, "optimize", "slimkit.demo_models:DigitsMLP", "--weights", work / "mlp.safetensors",
                         "--recipe", work / "prune-quick.yaml", "-o", work / "out", "--train-data",
                         work / "train.npz", "--data", work / "eval.npz")
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if STAMP.match(ln)]
    texts = [STAMP.sub("", ln) for ln in lines]
    assert "running pass prune" in texts, err
    epochs = [t for t in texts if ": epoch " in t]
    assert len(epochs) == 3, err  # one line per epoch end, none dropped by the rate limit
    steps = []
    for n, text in enumerate(epochs, start=1):
        m = re.fullmatch(rf"running pass prune: epoch {n}/3 loss (\S+) .*lr \S+ step (\d+)", text)
        assert m, text
        assert float(m.group(1)) >= 0
        steps.append(int(m.group(2)))
    assert steps == [4, 8, 12]  # 256 samples / batch 64 = 4 steps an epoch
    seconds = [float(STAMP.match(ln).group(0).strip("[] s")) for ln in lines]
    assert seconds == sorted(seconds)
    assert not any(STAMP.match(ln) for ln in out.splitlines())  # stdout holds the report only

    # --json: stdout stays one JSON document and nothing is printed as progress
    code, out, err = run(capsys, "optimize", "slimkit.demo_models:DigitsMLP", "--weights", work / "mlp.safetensors",
                         "--recipe", work / "prune-quick.yaml", "-o", work / "out-json", "--train-data",
                         work / "train.npz", "--data", work / "eval.npz", "--json")
    assert code == 0, err
    assert json.loads(out)["report"]["recipe"]["name"] == "prune-quick"
    assert not any(STAMP.match(ln) for ln in err.splitlines()), err


def test_progress_lines_rate_limit_updates_but_not_epochs_or_new_steps(capsys):
    from slimkit.progress import ProgressLines

    lines = ProgressLines(interval=60.0, hold=0.0)
    lines.say("running pass int8-auto")
    for i in range(1, 41):
        lines.say(f"running pass int8-auto: sensitivity {i}/40")
    for e in range(1, 4):
        lines.say(f"running pass prune: epoch {e}/3 loss 0.{e} lr 0.001 step {e * 10}")
    lines.say("measuring original and result, interleaved")
    lines.close()
    texts = [STAMP.sub("", ln) for ln in capsys.readouterr().err.splitlines()]
    assert texts == ["running pass int8-auto", "running pass int8-auto: sensitivity 1/40",
                     *[f"running pass prune: epoch {e}/3 loss 0.{e} lr 0.001 step {e * 10}" for e in range(1, 4)],
                     "measuring original and result, interleaved"]


def test_a_run_shorter_than_the_hold_prints_no_progress(capsys):
    from slimkit.progress import ProgressLines

    lines = ProgressLines(hold=30.0)
    lines.say("running pass to-onnx")
    lines.close()  # ended (or failed) at once: its one-line error stays alone on stderr
    assert capsys.readouterr().err == ""


# ---- 2. third-party noise of the TFLite conversion ----------------------------------------------------------


def _cli(*argv: str) -> subprocess.CompletedProcess:
    """`slimkit.cli.main([...])` in a child process, so its file descriptors 1 and 2 are real pipes."""
    code = "import sys; from slimkit.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if k != "SLIMKIT_VERBOSE"}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env,
                          timeout=300)


def test_tflite_conversion_keeps_third_party_noise_out_unless_verbose(digits_cnn, tmp_path):
    pytest.importorskip("litert_torch")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in digits_cnn.state_dict().items()}, str(tmp_path / "cnn.safetensors"))
    x, y = digits_arrays("test")
    np.savez(tmp_path / "digits.npz", image=x[:32].reshape(-1, 1, 8, 8), labels=y[:32])

    target = tmp_path / "out" / "cnn.tflite"
    quiet = _cli("convert", "slimkit.demo_models:DigitsCNN", "--weights", str(tmp_path / "cnn.safetensors"), "--to", "tflite",
                 "-o", str(target), "--data", str(tmp_path / "digits.npz"), "--json")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    noisy = [ln for ln in quiet.stderr.splitlines() if any(word in ln.lower() for word in NOISE)]
    assert noisy == [], quiet.stderr[-3000:]
    assert json.loads(quiet.stdout)["output"].endswith("cnn.tflite")  # LiteRT's progress no longer lands on stdout
    assert target.stat().st_size > 0

    # --verbose lets LiteRT's own output through (here: measuring the .tflite file), on stderr only
    loud = _cli("bench", str(target), "--data", str(tmp_path / "digits.npz"), "--json", "--verbose")
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert json.loads(loud.stdout)["runtime"] == "litert"
    assert "XNNPACK" in loud.stderr, loud.stderr[-3000:]


def test_quiet_native_hides_descriptor_output_and_a_failure_carries_its_tail(capfd, monkeypatch):
    from slimkit.quiet import quiet_native

    monkeypatch.delenv("SLIMKIT_VERBOSE", raising=False)
    with quiet_native("demo-lib"):
        os.write(1, b"I0000 native stdout chatter\n")
        os.write(2, b"W0000 absl::InitializeLog not called\n")
        print("python-level progress")
    out, err = capfd.readouterr()
    assert "chatter" not in out and "python-level" not in out and "absl" not in err

    with pytest.raises(SlimkitError) as failure:
        with quiet_native("demo-lib"):
            os.write(2, b"E0000 op FancyOp is not supported\n")
            raise SlimkitError("demo-lib cannot convert this model", "try another op")
    message = str(failure.value)
    assert message.splitlines()[0] == "demo-lib cannot convert this model: try another op"
    assert "E0000 op FancyOp is not supported" in message and "demo-lib output" in message
    assert "FancyOp" not in capfd.readouterr().err  # only in the error, not printed on its own

    monkeypatch.setenv("SLIMKIT_VERBOSE", "1")
    with quiet_native("demo-lib"):
        os.write(1, b"native stdout in verbose mode\n")
    out, err = capfd.readouterr()
    assert "native stdout in verbose mode" in err and "native stdout" not in out  # shown, but off stdout


# ---- 3. recipe descriptions are text, not markup ----------------------------------------------------------


def test_recipes_table_keeps_square_brackets(capsys):
    code, out, _ = run(capsys, "recipes")
    assert code == 0
    assert "[tf.float16]" in out


# ---- 4./5. bench: labels that never break mid-path; --json as JSON Lines ---------------------------------


@pytest.fixture
def deep_onnx_pair(tmp_path):
    """The hand-built ONNX classifier twice, as model.onnx in two deep folders that differ in one name."""
    from tests.conftest import _make_foreign_onnx

    paths = []
    for run_name in ("run-a", "run-b"):
        folder = tmp_path / "experiments" / "2024-06-01-digits-baseline" / run_name / "exported" / "onnx"
        folder.mkdir(parents=True)
        _make_foreign_onnx(folder / "model.onnx")
        paths.append(folder / "model.onnx")
    return paths


def _table_labels(out: str) -> list[str]:
    """The model cell of each row's first line in the measurement table (a folded label's first piece)."""
    lines = out.splitlines()
    body = lines[next(i for i, ln in enumerate(lines) if ln.startswith("┡")) + 1:]
    cells = [ln.split("│")[1].strip() for ln in body if ln.startswith("│")]
    return [c for c in cells if c]


@pytest.mark.parametrize("with_reference", [False, True])
def test_bench_labels_are_whole_path_tails_on_a_170_column_console(capsys, deep_onnx_pair, with_reference):
    a, b = deep_onnx_pair
    extra = ["--reference", a] if with_reference else []
    code, out, err = run(capsys, "bench", a, b, *extra)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 170
    labels = [label for label in _table_labels(out) if label != "reference"]
    assert len(labels) == 2 and len(set(labels)) == 2, out
    for label, path in zip(labels, (a, b), strict=True):
        assert label.startswith("…" + os.sep) and str(path).endswith(label[1:]), (label, out)
        assert label.endswith(os.sep.join(["exported", "onnx", "model.onnx"])), label  # never cut mid-name
    # The measurement data keeps the full paths.
    code, out, _ = run(capsys, "bench", a, b, *extra, "--json")
    assert [row["label"] for row in map(json.loads, out.splitlines()) if not row["reference"]] == [str(a), str(b)]


def test_bench_json_is_json_lines_and_help_says_so(capsys, deep_onnx_pair):
    a, b = deep_onnx_pair
    code, out, err = run(capsys, "bench", b, "--reference", a, "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["reference"] for r in rows] == [True, False]
    assert rows[1]["label"] == str(b) and "vs_reference" in rows[1]

    with pytest.raises(SystemExit) as done:
        main(["bench", "--help"])
    assert done.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "one JSON object per line (JSON Lines): the reference first, then each model" in help_text
