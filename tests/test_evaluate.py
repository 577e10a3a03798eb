"""The chunk of a run's final IS estimate: sized by counting activation bytes in a probe pass."""

import pytest
import torch

from pyro_vae.config import RunConfig
from pyro_vae.inference.evaluate import DEFAULT_CHUNK, EVAL_MEMORY, chunk_for_memory
from pyro_vae.models.registry import build_model

MLP_784 = 8016 + 3 * 4 * 784  # bytes counted per pair: the networks' outputs (see below) + 3 (pairs, D) floats
CONV_3072 = 164624 + 3 * 4 * 3072


def model(net: str, shape: tuple[int, int, int]):
    cfg = RunConfig()
    cfg.model.net = net
    return build_model(cfg, shape).eval()


@pytest.mark.parametrize(
    "net, shape, per_pair, chunk",
    [("mlp", (1, 28, 28), MLP_784, DEFAULT_CHUNK), ("conv", (3, 32, 32), CONV_3072, 2048)],
)
def test_the_chunk_holds_the_memory_budget(net, shape, per_pair, chunk):
    """The MLP on 784 pixels counts 4 datapoints × (400 + 400 + 20 + 20) encoder floats and
    8 pairs × (400 + 400 + 784) decoder floats: 8,016 bytes per pair; the largest power of two of
    pairs within :data:`EVAL_MEMORY` is the chunk, capped at :data:`DEFAULT_CHUNK`."""
    vae = model(net, shape)
    x = torch.rand(10, 3 * 32 * 32 if shape[0] == 3 else 784)
    state = torch.get_rng_state()
    got = chunk_for_memory(vae, vae.model, vae.guide, x)
    assert got == chunk == min(DEFAULT_CHUNK, 2 ** int(torch.log2(torch.tensor(EVAL_MEMORY / per_pair))))
    assert torch.equal(torch.get_rng_state(), state)  # the probe's draws come from a forked generator
    assert all(not m._forward_hooks for m in vae.modules())  # and its hooks are gone
    assert chunk_for_memory(vae, vae.model, vae.guide, x, memory=5 * per_pair) == 4
    assert chunk_for_memory(vae, vae.model, vae.guide, x, memory=1) == 1
