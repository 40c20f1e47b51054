"""The digits zoo models are the same in every process for a given seed (init and training both seeded)."""

from __future__ import annotations

import subprocess
import sys

# In a fresh interpreter (no cache): for each seed, build the MLP and print a SHA-256 over its state_dict.
# The global generator is set to `noise` first: what it held before the call must not matter.
_HASH_SCRIPT = """
import hashlib, sys
import torch
from slimkit.demo_models import trained_digits_model
noise, seeds = int(sys.argv[1]), [int(s) for s in sys.argv[2:]]
for seed in seeds:
    torch.manual_seed(noise)
    module = trained_digits_model("mlp", seed=seed, epochs=1)
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    print(digest.hexdigest())
"""


def _weights_hashes(noise: int, *seeds: int) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _HASH_SCRIPT, str(noise), *map(str, seeds)], capture_output=True,
                         text=True, timeout=300, check=True)
    return out.stdout.split()


def test_trained_digits_model_is_the_same_in_fresh_processes():
    first_seed0, first_seed1 = _weights_hashes(11, 0, 1)
    (second_seed0,) = _weights_hashes(22, 0)
    assert len(first_seed0) == 64
    assert first_seed0 == second_seed0
    assert first_seed1 != first_seed0
