"""Networks by role: the ``encoder`` of q(z|x) and the ``decoder`` of p(x|z), as MLPs or convnets.

Images stay flat, ``(..., D)`` with D = C·H·W in (C, H, W) order (see :class:`pyro_vae.data.images.ImageData`);
the conv networks reshape them inside. Each encoder takes an optional condition ``c`` (a one-hot
label, ``(..., num_classes)``), which broadcasts against x: under enumeration of y, ``c`` is
``(classes, 1, num_classes)`` and x ``(batch, D)``. A decoder takes the condition too, as
:data:`DECODER_Y` names: with z at its input (``input``), at the input of every layer
(``every-layer``), or there and also scaling and shifting every hidden layer (``film``).

:data:`NETS` maps ``ModelConfig.net`` (``--net``) to the two builders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyro_vae.errors import DataError, RegistryError

DECODER_Y = ("input", "every-layer", "film")  # how a decoder reads its condition (--decoder-y)


def check_decoder_y(mode: str) -> None:
    """:raises ValueError: for a mode not in :data:`DECODER_Y`."""
    if mode not in DECODER_Y:
        raise RegistryError(f"unknown decoder_y {mode!r}; choose one of {', '.join(DECODER_Y)}")


class FiLM(nn.Module):
    """Feature-wise modulation by a condition (Perez et al. 2018): h ↦ h ⊙ (1 + γ(c)) + β(c).

    With c one-hot, γ and β are one row per class: each class scales and shifts every unit of h, so
    the class decides which units z drives (concatenating c only shifts them). Starts as the identity
    (zero weights), so a ``film`` decoder begins as an ``every-layer`` one.

    :param int cond_dim: width of c; ``width``: of h.
    """

    def __init__(self, cond_dim: int, width: int):
        super().__init__()
        self.net = nn.Linear(cond_dim, 2 * width)
        nn.init.zeros_(self.net.weight)
        nn.init.zeros_(self.net.bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        """``h`` ``(..., width)`` and ``c`` ``(..., cond_dim)`` (broadcast) ↦ ``(..., width)``."""
        gamma, beta = self.net(c.to(h.dtype)).chunk(2, dim=-1)  # each (..., width)
        return h * (1 + gamma) + beta

    def channels(self, h: Tensor, c: Tensor) -> Tensor:
        """Per channel: ``h`` ``(n, width, H, W)`` and ``c`` ``(n, cond_dim)`` ↦ ``(n, width, H, W)``."""
        return self(h.movedim(1, -1), c[:, None, None, :]).movedim(-1, 1)


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def with_condition(h: Tensor, c: Tensor | None) -> Tensor:
    """[h, c] along the last dim, broadcasting the leading dims of both; h alone when c is None."""
    if c is None:
        return h
    lead = torch.broadcast_shapes(h.shape[:-1], c.shape[:-1])
    return torch.cat([h.expand(*lead, h.shape[-1]), c.expand(*lead, c.shape[-1])], -1)


class MLPEncoder(nn.Module):
    """x (and a condition c) ↦ features h for a guide head (see :mod:`pyro_vae.inference.guides`): an MLP
    with a final ReLU.

    :param int x_dim: D, pixels per image.
    :param hidden_dims: widths of the hidden layers; ``out_dim`` is the last one.
    :param int cond_dim: width of the condition c concatenated to x (0: none).
    """

    def __init__(self, x_dim: int, hidden_dims: Sequence[int] = (400,), cond_dim: int = 0):
        super().__init__()
        self.out_dim = hidden_dims[-1]
        self.net = nn.Sequential(mlp([x_dim + cond_dim, *hidden_dims]), nn.ReLU())

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        if c is None:
            return self.net(x)  # (..., hidden_dims[-1])
        # W [x, c] + b = W_x x + W_c c + b: the widest product runs once per image, also when c
        # is enumerated over the classes, (classes, 1, K) against x (batch, D)
        first, d = self.net[0][0], x.shape[-1]
        h = F.linear(x, first.weight[:, :d], first.bias) + F.linear(c.to(x.dtype), first.weight[:, d:])  # (..., hidden)
        return self.net[1](self.net[0][1:](h))  # (..., hidden_dims[-1])


class MLPDecoder(nn.Module):
    """z (and a condition c) ↦ the parameters of p(x|z, c), ``out_per_pixel`` numbers for each of
    the D pixels.

    ``decoder_y`` (:data:`DECODER_Y`) says how c enters: concatenated to z at the input (``input``,
    as Sohn et al. 2015), concatenated to the input of every linear layer (``every-layer``: a one-hot
    label reaches each layer directly instead of through hidden units shared with z), or that and a
    :class:`FiLM` after every hidden layer (``film``).

    Works on any leading batch shape, e.g. ``(particles, batch, z_dim)``; c broadcasts against z.

    :param int cond_dim: width of the condition (0: none, and ``decoder_y`` is moot).
    :param str decoder_y: a name in :data:`DECODER_Y`.
    """

    def __init__(
        self,
        z_dim: int,
        x_dim: int,
        hidden_dims: Sequence[int] = (400,),
        out_per_pixel: int = 1,
        cond_dim: int = 0,
        decoder_y: str = "input",
    ):
        super().__init__()
        check_decoder_y(decoder_y)
        sizes = [z_dim, *reversed(hidden_dims), x_dim * out_per_pixel]
        self.every_layer = decoder_y != "input" and cond_dim > 0
        self.films = None  # one FiLM per hidden layer with decoder_y="film"
        if self.every_layer:
            self.layers = nn.ModuleList(nn.Linear(a + cond_dim, b) for a, b in zip(sizes[:-1], sizes[1:]))
            if decoder_y == "film":
                self.films = nn.ModuleList(FiLM(cond_dim, width) for width in sizes[1:-1])
        else:
            self.net = mlp([sizes[0] + cond_dim, *sizes[1:]])

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        if not self.every_layer:
            return self.net(with_condition(z, c))  # (..., x_dim * out_per_pixel)
        h, films = z, self.films
        for i, layer in enumerate(self.layers):
            h = layer(with_condition(h, c))  # (..., next width)
            if i < len(self.layers) - 1:
                h = torch.relu(h if films is None else films[i](h, c))
        return h  # (..., x_dim * out_per_pixel)


def _check_conv_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(image_shape) != 3 or image_shape[1] % 4 or image_shape[2] % 4:
        raise DataError(
            f"the conv networks need images (C, H, W) with H and W divisible by 4 (e.g. (1, 28, 28), "
            f"(3, 32, 32)), got {tuple(image_shape)}; use --net mlp"
        )
    return tuple(image_shape)


class ConvEncoder(nn.Module):
    """x (and a condition c) ↦ features h: two stride-2 convolutions, then a linear layer.

    For (1, 28, 28): 28 → 14 → 7; for (3, 32, 32): 32 → 16 → 8. The condition joins after the
    convolutions, so under enumeration of y the convolutions run once per image.

    :param image_shape: (C, H, W), H and W divisible by 4.
    :param int hidden_dim: ``out_dim``, the width of h.
    :param int cond_dim: width of the condition c (0: none).
    """

    def __init__(self, image_shape: Sequence[int], hidden_dim: int = 400, cond_dim: int = 0):
        super().__init__()
        self.image_shape = C, H, W = _check_conv_shape(image_shape)
        self.out_dim = hidden_dim
        self.conv = nn.Sequential(
            nn.Conv2d(C, 32, 4, stride=2, padding=1),  # (n, 32, H/2, W/2)
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),  # (n, 64, H/4, W/4)
            nn.ReLU(),
        )
        self.fc = nn.Sequential(nn.Linear(64 * (H // 4) * (W // 4) + cond_dim, hidden_dim), nn.ReLU())

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        lead = x.shape[:-1]
        h = self.conv(x.reshape(-1, *self.image_shape))  # (n, 64, H/4, W/4)
        h = h.flatten(1).reshape(*lead, -1)  # (..., 64·H/4·W/4)
        return self.fc(with_condition(h, c))  # (..., hidden_dim)


class ConvDecoder(nn.Module):
    """z (and a condition c) ↦ the parameters of p(x|z, c): a linear layer to (64, H/4, W/4), then
    two stride-2 transposed convolutions up to (out_per_pixel·C, H, W), flattened.

    The output is ``out_per_pixel`` blocks of D = C·H·W numbers (channel o·C + c is parameter o of
    colour c), the layout the likelihoods read. The condition joins z at the input; with
    ``decoder_y="every-layer"`` it also enters both linear layers and, as constant channels, both
    transposed convolutions; ``"film"`` adds a :class:`FiLM` after the hidden linear layer and, per
    channel, on the 64 and 32 feature maps.
    """

    def __init__(
        self,
        z_dim: int,
        image_shape: Sequence[int],
        hidden_dim: int = 400,
        out_per_pixel: int = 1,
        cond_dim: int = 0,
        decoder_y: str = "input",
    ):
        super().__init__()
        check_decoder_y(decoder_y)
        C, H, W = _check_conv_shape(image_shape)
        self.grid = (64, H // 4, W // 4)
        self.every_layer = decoder_y != "input" and cond_dim > 0
        extra = cond_dim if self.every_layer else 0
        self.films = None  # FiLMs of the hidden linear layer and the 64- and 32-channel maps with decoder_y="film"
        if self.every_layer and decoder_y == "film":
            self.films = nn.ModuleList([FiLM(cond_dim, hidden_dim), FiLM(cond_dim, 64), FiLM(cond_dim, 32)])
        self.fc = nn.Sequential(
            nn.Linear(z_dim + cond_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim + extra, 64 * (H // 4) * (W // 4)),
            nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64 + extra, 32, 4, stride=2, padding=1),  # (n, 32, H/2, W/2)
            nn.ReLU(),
            nn.ConvTranspose2d(32 + extra, C * out_per_pixel, 4, stride=2, padding=1),  # (n, out·C, H, W)
        )

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        zc = with_condition(z, c)  # (..., z_dim + cond_dim)
        lead = zc.shape[:-1]
        if not self.every_layer:
            h = self.fc(zc).reshape(-1, *self.grid)  # (n, 64, H/4, W/4)
            return self.deconv(h).reshape(*lead, -1)  # (..., out_per_pixel · D)
        films = self.films
        c = c.expand(*lead, c.shape[-1])
        h = self.fc[0](zc)  # (..., hidden_dim)
        h = self.fc[1](h if films is None else films[0](h, c))
        h = self.fc[2](with_condition(h, c)).reshape(-1, *self.grid)  # (n, 64, H/4, W/4)
        flat = c.reshape(-1, c.shape[-1])  # (n, cond_dim)
        h = self.fc[3](h if films is None else films[1].channels(h, flat))
        cc = flat[:, :, None, None]  # (n, cond_dim, 1, 1)
        h = self.deconv[0](torch.cat([h, cc.expand(-1, -1, *h.shape[-2:])], 1))  # (n, 32, H/2, W/2)
        h = self.deconv[1](h if films is None else films[2].channels(h, flat))
        h = self.deconv[2](torch.cat([h, cc.expand(-1, -1, *h.shape[-2:])], 1))  # (n, out·C, H, W)
        return h.reshape(*lead, -1)  # (..., out_per_pixel · D)


@dataclass(frozen=True)
class Net:
    """A registered network family.

    :ivar encoder: ``encoder(image_shape, hidden_dims, cond_dim)`` ↦ a module with ``out_dim``.
    :ivar decoder: ``decoder(z_dim, image_shape, hidden_dims, out_per_pixel, cond_dim=0,
        decoder_y="input")``.
    """

    name: str
    encoder: Callable[..., nn.Module]
    decoder: Callable[..., nn.Module]
    description: str


def _d(image_shape: Sequence[int]) -> int:
    return int(torch.Size(image_shape).numel())


#: Encoder and decoder networks by ``--net`` name.
NETS: dict[str, Net] = {
    "mlp": Net(
        "mlp",
        lambda shape, hidden, cond: MLPEncoder(_d(shape), hidden, cond),
        lambda z, shape, hidden, out, cond=0, mode="input": MLPDecoder(z, _d(shape), hidden, out, cond, mode),
        "MLPs with --hidden-dims widths (the decoder mirrors them)",
    ),
    "conv": Net(
        "conv",
        lambda shape, hidden, cond: ConvEncoder(shape, hidden[-1], cond),
        lambda z, shape, hidden, out, cond=0, mode="input": ConvDecoder(z, shape, hidden[-1], out, cond, mode),
        "two stride-2 convolutions each way, a linear layer of the last --hidden-dims width",
    ),
}


def get_net(name: str) -> Net:
    """:raises ValueError: for an unknown name, listing the registered ones."""
    try:
        return NETS[name]
    except KeyError:
        raise RegistryError(f"unknown net {name!r}; choose one of {', '.join(NETS)}") from None
