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


def test_paired_difference_is_the_mean_difference_with_its_paired_standard_error():
    import torch

    from pyro_vae.errors import UsageError
    from pyro_vae.inference.evaluate import paired_difference

    ref = torch.tensor([-100.0, -200.0, -300.0, -400.0])
    mean, se = paired_difference(ref + torch.tensor([1.0, 2.0, 3.0, 4.0]), ref)
    assert mean == 2.5 and se == pytest.approx((5 / 3) ** 0.5 / 2, abs=1e-15)  # sd of 1..4 is √(5/3)
    with pytest.raises(UsageError, match="need the same test images twice, got 3 and 4 values"):
        paired_difference(ref[:3], ref)


def test_per_image_values_round_trip_and_junk_is_refused(tmp_path):
    import torch

    from pyro_vae.errors import DataError
    from pyro_vae.inference.evaluate import load_per_image, save_per_image

    save_per_image(tmp_path / "v.pt", torch.tensor([1.5, -2.25], dtype=torch.float32))
    assert load_per_image(tmp_path / "v.pt").tolist() == [1.5, -2.25]
    (tmp_path / "junk.pt").write_text("not a tensor")
    with pytest.raises(DataError, match=r"cannot read per-image log p\(x\) from .*junk.pt"):
        load_per_image(tmp_path / "junk.pt")
    torch.save(torch.zeros(2, 2), tmp_path / "matrix.pt")
    with pytest.raises(DataError, match="does not hold a vector of per-image log p"):
        load_per_image(tmp_path / "matrix.pt")
