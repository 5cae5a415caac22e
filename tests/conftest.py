"""Shared test settings and fixtures (keep this small and generic)."""

import os

import numpy as np
import pytest

ONLINE = os.environ.get("AST_JAX_ONLINE_TESTS") == "1"

# The programs keep compiled functions in the user's cache directory; tests (and the programs they start) must
# not write there. tests/test_compilation_cache.py turns it on, pointed at temporary directories.
os.environ["AST_JAX_COMPILATION_CACHE"] = "off"


def pytest_collection_modifyitems(config, items):
    """Tests marked `online` need the network: they run only with AST_JAX_ONLINE_TESTS=1."""
    skip = pytest.mark.skip(reason="needs network access; set AST_JAX_ONLINE_TESTS=1 to run")
    for item in items:
        if "online" in item.keywords and not ONLINE:
            item.add_marker(skip)


@pytest.fixture
def randomize_torch():
    """Fill every parameter of a torch module with seeded random values.

    Fresh torch modules start with zero tokens and unit LayerNorms, which would hide a swapped or dropped
    tensor in a parity test; random values do not.
    """

    def randomize(module, seed: int = 0):
        import torch

        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in module.named_parameters():
                noise = torch.randn(parameter.shape, generator=generator)
                if parameter.ndim >= 2 and parameter.shape[0] > 1 and parameter.shape[1] > 1:
                    parameter.copy_(noise * 0.02)  # weight matrices at the spread of the trained checkpoints
                elif name.endswith("weight"):
                    parameter.copy_(1.0 + noise * 0.1)  # LayerNorm scales around 1
                else:
                    parameter.copy_(noise * 0.1)  # biases, tokens, position table
        return module.eval()

    return randomize


@pytest.fixture
def spectrogram():
    """Random normalised input (batch, frames, mel bins), float32, seeded."""

    def make(batch: int, frames: int, bins: int = 128, seed: int = 0):
        return np.random.default_rng(seed).standard_normal((batch, frames, bins)).astype(np.float32)

    return make
