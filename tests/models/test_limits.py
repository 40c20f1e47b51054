"""A Hugging Face model whose position limit (64) is smaller than the default --seq-len (128).

A real tiny BERT (transformers, safetensors, a WordPiece tokenizer beside it) goes through the command line:
convert, optimize and bench pick the model's limit when --seq-len is not given, refuse a longer explicit one
with one line, and an exported model run later on longer sequences says so instead of a generic shape error.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from slimkit.cli import main
from slimkit.demo_models import sentences
from slimkit.errors import SlimkitError
from slimkit.settings import MeasureSettings

LIMIT = 64
NOTE = "sequence length 64: the model has 64 positions (the default 128 is longer)"
TOO_LONG = "sequence of 128 tokens is longer than the model's 64 positions"

_WORDS = ("the a of and to in is for on with that by this are be as from at or an it model models data value "
          "values function functions matrix array vector input output compute return given number points").split()


def _vocab() -> list[str]:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,()-_'`=:")
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS, *letters, *(f"##{c}" for c in letters)]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A BERT with max_position_embeddings 64, saved with save_pretrained, tokenizer beside it."""
    import torch
    import transformers

    folder = tmp_path_factory.mktemp("tinybert")
    (folder / "vocab.txt").write_text("\n".join(_vocab()) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    config = transformers.BertConfig(vocab_size=len(_vocab()), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=LIMIT)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "eval.txt"
    path.write_text("\n".join(sentences("eval", 12)) + "\n")
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    # One thread: tiny models gain nothing from two, and two threads crawl on a busy 2-core machine.
    code = main([str(a) for a in argv] + ["--threads", "1"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def converted(tiny_bert, text_file, tmp_path_factory) -> tuple[int, str, str, Path]:
    """`slimkit convert tinybert --to onnx -o out/model.onnx --data eval.txt --json`, the user's command, once."""
    target = tmp_path_factory.mktemp("converted") / "out" / "model.onnx"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["convert", str(tiny_bert), "--to", "onnx", "-o", str(target), "--data", str(text_file),
                     "--json", "--threads", "1"])
    return code, out.getvalue(), err.getvalue(), target


def _onnx_limit(path: Path) -> str | None:
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return props.get("slimkit.max_positions")


def test_convert_without_seq_len_uses_the_model_limit(converted, tiny_bert, text_file):
    code, out, err, target = converted
    assert code == 0, err
    report = json.loads(out)["report"]
    assert NOTE in report["notes"]
    assert _onnx_limit(target) == "64"
    assert report["measurements"][-1]["fidelity"]["cosine_mean"] > 0.999
    # The Python API says the same line through its progress callback (bench: no export needed).
    from slimkit.api import bench

    said: list[str] = []
    [measured] = bench([str(tiny_bert)], data=str(text_file), settings=MeasureSettings(threads=1), progress=said.append)
    assert NOTE in said and measured.data["samples"] == 12


def test_explicit_seq_len_over_the_limit_is_refused_before_any_work(capsys, tiny_bert, text_file, tmp_path):
    target = tmp_path / "out" / "model.onnx"
    code, out, err = run(capsys, "convert", tiny_bert, "--to", "onnx", "-o", target, "--data", text_file,
                         "--seq-len", "128")
    assert code == 2
    assert err.strip().splitlines() == [f"error: {TOO_LONG}: use --seq-len 64 or less"]
    assert not target.exists() and not target.parent.exists()
    code, _, err = run(capsys, "optimize", tiny_bert, "--recipe", "fp16", "-o", tmp_path / "opt",
                       "--data", text_file, "--seq-len", "65")
    assert code == 2 and "sequence of 65 tokens is longer than the model's 64 positions" in err
    assert not (tmp_path / "opt").exists()
    from slimkit.api import bench

    with pytest.raises(SlimkitError, match="sequence of 100 tokens is longer than the model's 64 positions"):
        bench([str(tiny_bert)], data=str(text_file), settings=MeasureSettings(seq_len=100, threads=1))
    # At the limit itself it runs, and says nothing about the default.
    said: list[str] = []
    [measured] = bench([str(tiny_bert)], data=str(text_file), settings=MeasureSettings(seq_len=LIMIT, threads=1), progress=said.append)
    assert measured.data["samples"] == 12 and NOTE not in said


def test_bench_of_exported_onnx_at_longer_sequence_names_the_limit(capsys, converted, tiny_bert, text_file, tmp_path):
    exported = converted[-1]
    code, _, err = run(capsys, "bench", exported, "--data", text_file, "--seq-len", "128")
    assert code == 2
    assert TOO_LONG in err and "check the data shapes" not in err
    code, out, err = run(capsys, "bench", exported, "--data", text_file, "--json")
    assert code == 0, err
    # Data whose sequences are already longer (not padded by slimkit): the runtime error is made specific,
    # for the exported ONNX model and for the PyTorch model alike.
    ids = np.ones((4, 128), dtype=np.int64)
    np.savez(tmp_path / "long.npz", input_ids=ids, attention_mask=ids, token_type_ids=np.zeros_like(ids))
    for model in (exported, tiny_bert):
        code, _, err = run(capsys, "bench", model, "--data", tmp_path / "long.npz")
        assert code == 2, err
        assert TOO_LONG in err and "check the data shapes" not in err and "Traceback" not in err


def test_optimize_fp16_first_run_on_a_small_limit_model(capsys, converted, text_file, tmp_path):
    """The first-run path: convert (fixture), optimize the exported model to fp16, bench the result."""
    out_dir = tmp_path / "fp16"
    code, out, err = run(capsys, "optimize", converted[-1], "--recipe", "fp16", "-o", out_dir, "--data", text_file,
                         "--json")
    assert code == 0, err
    report = json.loads(out)["report"]
    assert NOTE in report["notes"]
    assert NOTE in json.loads((out_dir / "report.json").read_text())["notes"]
    assert _onnx_limit(out_dir / "model.onnx") == "64"
    assert json.loads((out_dir / "slimkit.json").read_text())["max_positions"] == 64
    assert report["measurements"][-1]["fidelity"]["cosine_mean"] > 0.99
    # The fp16 artifact, loaded from disk later, keeps the limit: default runs at 64, 128 is refused.
    code, _, err = run(capsys, "bench", out_dir / "model.onnx", "--data", text_file, "--json")
    assert code == 0, err
    code, _, err = run(capsys, "bench", out_dir / "model.onnx", "--data", text_file, "--seq-len", "128")
    assert code == 2 and TOO_LONG in err


def test_padding_offset_of_roberta_style_models(tmp_path):
    """RoBERTa's positions start after the padding index: 66 rows with pad_token_id 1 take 64 tokens."""
    import torch
    import transformers

    from slimkit.models.limits import hf_max_positions

    config = transformers.RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=32, max_position_embeddings=LIMIT + 2, pad_token_id=1)
    config.save_pretrained(str(tmp_path))
    limit = hf_max_positions(json.loads((tmp_path / "config.json").read_text()))
    assert limit == LIMIT
    model = transformers.RobertaModel(config).eval()
    with torch.inference_mode():
        model(input_ids=torch.full((1, limit), 5))  # the limit itself runs
        with pytest.raises((IndexError, RuntimeError)):
            model(input_ids=torch.full((1, limit + 1), 5))
    assert hf_max_positions({"model_type": "bert", "max_position_embeddings": LIMIT}) == LIMIT
    assert hf_max_positions({"model_type": "gpt2", "n_positions": 32}) == 32
    assert hf_max_positions({"model_type": "t5"}) is None
