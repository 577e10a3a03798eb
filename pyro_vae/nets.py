"""Networks by role: the ``encoder`` of q(z|x) and the ``decoder`` of p(x|z)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x ↦ features h for a guide head (see :mod:`pyro_vae.guides`): an MLP with a final ReLU.

    :param int x_dim: D, pixels per image.
    :param hidden_dims: widths of the hidden layers; ``out_dim`` is the last one.
    """

    def __init__(self, x_dim: int, hidden_dims: Sequence[int] = (400,)):
        super().__init__()
        self.out_dim = hidden_dims[-1]
        self.net = nn.Sequential(mlp([x_dim, *hidden_dims]), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (..., hidden_dims[-1])


class MLPDecoder(nn.Module):
    """z ↦ the parameters of p(x|z), ``out_per_pixel`` numbers for each of the D pixels.

    Works on any leading batch shape, e.g. ``(particles, batch, z_dim)``.
    """

    def __init__(self, z_dim: int, x_dim: int, hidden_dims: Sequence[int] = (400,), out_per_pixel: int = 1):
        super().__init__()
        self.net = mlp([z_dim, *reversed(hidden_dims), x_dim * out_per_pixel])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)  # (..., x_dim * out_per_pixel)
