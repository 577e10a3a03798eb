"""Each plot returns a Figure and, given a path, writes a PNG."""

import pytest
import torch
from matplotlib.figure import Figure

from pyro_vae import plots
from pyro_vae.models.vae import VAE

SHAPE = (1, 28, 28)


@pytest.fixture
def vae2():
    return VAE(784, 2, (32,))


def is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_plot_returns_figure_and_png(vae2, tmp_path):
    x, y = torch.rand(20, 784), torch.arange(20) % 10
    history = [{"epoch": e, "train_elbo": -200.0 + e, "test_elbo": -205.0 + e} for e in (1, 2, 3)]
    figs = {
        "elbo": plots.elbo_curves(history, tmp_path / "elbo.png", pixels="continuous"),
        "rec": plots.reconstructions(vae2, x, SHAPE, n=5, path=tmp_path / "rec.png"),
        "samples": plots.samples(vae2, SHAPE, n=16, path=tmp_path / "samples.png"),
        "latent": plots.latent_scatter(vae2, x, y, path=tmp_path / "latent.png"),
        "manifold": plots.latent_manifold(vae2, SHAPE, n=5, path=tmp_path / "manifold.png"),
    }
    assert all(isinstance(f, Figure) for f in figs.values())
    assert all(is_png(tmp_path / f"{n}.png") for n in figs)
    assert figs["elbo"].axes[0].get_ylabel() == "nats per image (continuous pixels)"
    assert figs["latent"].axes[0].get_xlabel() == "z[0]"


def test_reconstruction_grid_holds_inputs_over_outputs(vae2):
    """Two rows of n tiles of 28 px with 1 px padding: (2·29+1) × (n·29+1) pixels."""
    fig = plots.reconstructions(vae2, torch.rand(4, 784), SHAPE, n=4)
    assert fig.axes[0].images[0].get_array().shape[:2] == (2 * 29 + 1, 4 * 29 + 1)


def test_latent_scatter_uses_pca_beyond_two_dims(tmp_path):
    fig = plots.latent_scatter(VAE(784, 5, (32,)), torch.rand(30, 784), torch.arange(30) % 10)
    assert fig.axes[0].get_xlabel() == "PC 1"


def test_manifold_needs_two_latent_dims():
    with pytest.raises(ValueError, match="the latent manifold needs z_dim = 2, got z_dim = 5"):
        plots.latent_manifold(VAE(784, 5, (32,)), SHAPE)
