"""all-MiniLM-L6-v2 (a real pretrained sentence transformer): load the folder, export once, compare on real text."""

from __future__ import annotations

import numpy as np

from slimkit.data_sources import text_data
from slimkit.demo_models import minilm_path, sentences
from slimkit.evaluate.measure import Evaluator
from slimkit.formats import make_runner
from slimkit.models.base import OnnxModel, TorchModel
from slimkit.settings import MeasureSettings


def test_load_folder(minilm):
    assert isinstance(minilm, TorchModel)
    assert minilm.task == "embedding" and minilm.tokenizer_dir == minilm_path()
    assert minilm.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(s.shape == ("batch", "sequence") and s.dtype == "int64" for s in minilm.input_specs)
    assert 22_000_000 < minilm.param_count() < 23_000_000  # MiniLM-L6-H384


def test_embeddings_are_normalized_and_meaningful(minilm):
    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]
    feed = text_data(texts, minilm, batch_size=3, seq_len=32).batches[0].feed
    emb = make_runner(minilm, threads=2).run(feed)[0]
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # the paraphrase is much closer than the unrelated sentence


def test_export_to_onnx(minilm_onnx):
    result = minilm_onnx
    assert isinstance(result.model, OnnxModel)
    assert result.stats["max_abs_diff_vs_torch"] < 1e-4 and result.stats["dynamic_shapes"] is True
    assert result.model.output_names == ["sentence_embedding"]
    assert [s.shape for s in result.model.input_specs] == [("batch", "sequence")] * 3
    assert result.model.task == "embedding" and result.model.tokenizer_dir == minilm_path()


def test_onnx_matches_torch_on_real_sentences(minilm, minilm_onnx):
    texts = sentences("eval", 32)
    assert len(texts) == 32 and len(set(texts)) == 32
    data = text_data(texts, minilm, batch_size=8, seq_len=128)
    assert data.batches[0].feed["input_ids"].shape == (8, 128)
    evaluator = Evaluator(data, reference=minilm, like=minilm_onnx.model, settings=MeasureSettings(batch_size=8, threads=2),
                          latency_rounds=2, round_runs=2, round_seconds=0.0, warmup=1)
    m = evaluator.measure(minilm_onnx.model)
    assert m.data["samples"] == 32 and not m.data["generated"]
    assert m.fidelity["samples"] == 32
    assert m.fidelity["cosine_min"] >= 0.9999
    assert m.fidelity["max_abs_err"] < 1e-4
    assert "top1_agreement" not in m.fidelity and m.metrics == {}  # an embedding model: no classification metrics
    assert m.latency_ms["p50"] > 0 and m.batch_size == 8


def test_onnx_other_sequence_length(minilm, minilm_onnx):
    """The exported sequence axis is dynamic: 20 tokens works as well as the 128 above."""
    feed = text_data(sentences("calib", 4), minilm, batch_size=4, seq_len=20).batches[0].feed
    ref = make_runner(minilm, 2).run(feed)[0]
    got = make_runner(minilm_onnx.model, 2).run(feed)[0]
    assert got.shape == (4, 384)
    np.testing.assert_allclose(got, ref, atol=1e-4)
