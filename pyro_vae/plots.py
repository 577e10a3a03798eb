"""Figures of a run. Each function returns a matplotlib ``Figure`` (shown inline in notebooks)
and, given ``path``, also saves it as a PNG, atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from .io import atomic_write


def save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    return fig


def _show_grid(ax, images: Tensor, image_shape: Sequence[int], nrow: int) -> None:
    from torchvision.utils import make_grid  # imported here: torchvision costs ~1.4 s and 160 MiB to import

    grid = make_grid(
        images.detach().float().cpu().clamp(0, 1).reshape(-1, *image_shape), nrow=nrow, padding=1, pad_value=1.0
    )
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")  # (H', W', 3)
    ax.set_axis_off()


def elbo_curves(history: Sequence[dict], path: str | Path | None = None, pixels: str | None = None) -> Figure:
    """Train and test ELBO (nats per image) against epoch."""
    fig = Figure(figsize=(5.5, 3.5))
    ax = fig.subplots()
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r["train_elbo"] for r in history], label="train ELBO")
    ax.plot(epochs, [r["test_elbo"] for r in history], label="test ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per image" + (f" ({pixels} pixels)" if pixels else ""))
    ax.legend()
    ax.grid(alpha=0.3)
    return save(fig, path)


def reconstructions(vae, x: Tensor, image_shape: Sequence[int], n: int = 10, path: str | Path | None = None) -> Figure:
    """The first ``n`` rows of ``x`` (top) above the decoded posterior means (bottom)."""
    x = x[:n]
    fig = Figure(figsize=(n * 0.7, 1.6))
    _show_grid(fig.subplots(), torch.cat([x, vae.reconstruct(x)]), image_shape, nrow=len(x))
    fig.suptitle("inputs (top) and reconstructions (bottom)", fontsize=9)
    return save(fig, path)


def samples(vae, image_shape: Sequence[int], n: int = 64, path: str | Path | None = None) -> Figure:
    """The means of p(x|z) for ``n`` draws z ~ p(z), in a square-ish grid."""
    nrow = max(1, int(n**0.5))
    fig = Figure(figsize=(nrow * 0.6, (n / nrow) * 0.6))
    _show_grid(fig.subplots(), vae.sample(n), image_shape, nrow=nrow)
    return save(fig, path)


def latent_scatter(vae, x: Tensor, y: Tensor, path: str | Path | None = None) -> Figure:
    """Posterior means coloured by label; their first two PCA components when z_dim > 2."""
    z = vae.encode(x)[0].cpu()
    if z.shape[1] > 2:
        z = z - z.mean(0)
        _, _, v = torch.pca_lowrank(z, q=2, center=False)
        z, labels = z @ v, ("PC 1", "PC 2")
    else:
        labels = ("z[0]", "z[1]")
    fig = Figure(figsize=(5, 4.3))
    ax = fig.subplots()
    points = ax.scatter(z[:, 0], z[:, 1], c=y.cpu(), cmap="tab10", s=4, alpha=0.7)
    fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    return save(fig, path)


def latent_manifold(vae, image_shape: Sequence[int], n: int = 20, path: str | Path | None = None) -> Figure:
    """For z_dim = 2: decode an ``n × n`` grid of quantiles pushed through the Normal inverse CDF."""
    if vae.z_dim != 2:
        raise ValueError(f"the latent manifold needs z_dim = 2, got z_dim = {vae.z_dim}")
    q = torch.linspace(0.5 / n, 1 - 0.5 / n, n)
    z1 = torch.distributions.Normal(0.0, 1.0).icdf(q)
    zz = torch.stack(torch.meshgrid(z1, z1.flip(0), indexing="xy"), -1).reshape(-1, 2)  # (n*n, 2)
    fig = Figure(figsize=(6, 6))
    _show_grid(fig.subplots(), vae.decode(zz.to(vae.prior_loc.device)), image_shape, nrow=n)
    return save(fig, path)


def elbo_vs_time(cells: Sequence[dict], path: str | Path | None = None) -> Figure:
    """Test ELBO against cumulative training seconds, one line per compare cell.

    :param cells: dicts with ``guide``, ``elbo``, ``K``, ``seed`` and ``curve``, a list of
        (epoch seconds, test ELBO) pairs (see :mod:`pyro_vae.compare`).
    """
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    # one colour per (estimator, K), one line style per guide: a grid stays readable past 10 cells
    colours = {k: f"C{i % 10}" for i, k in enumerate(dict.fromkeys((c["elbo"], c["K"]) for c in cells))}
    styles = {g: ("-", "--", ":", "-.")[i % 4] for i, g in enumerate(dict.fromkeys(c["guide"] for c in cells))}
    for c in cells:
        seconds = torch.tensor([s for s, _ in c["curve"]]).cumsum(0)
        label = f"{c['guide']} + {c['elbo']} (K={c['K']})" + (f", seed {c['seed']}" if "seed" in c else "")
        colour, style = colours[c["elbo"], c["K"]], styles[c["guide"]]
        ax.plot(seconds, [e for _, e in c["curve"]], marker=".", label=label, color=colour, linestyle=style)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("test ELBO (nats per image)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save(fig, path)


def snr_bars(rows: Sequence[dict], path: str | Path | None = None) -> Figure:
    """Encoder and decoder gradient SNR per (guide, estimator, K), log scale."""
    fig = Figure(figsize=(max(5.0, 0.55 * len(rows) + 1.5), 3.8))
    ax = fig.subplots()
    x = torch.arange(len(rows), dtype=torch.float)
    for offset, part in ((-0.2, "encoder"), (0.2, "decoder")):
        ax.bar(x + offset, [r[f"{part}_snr"] for r in rows], width=0.4, label=part)
    ax.set_xticks(x.tolist(), [f"{r['guide']}\n{r['elbo']} K={r['K']}" for r in rows], fontsize=7, rotation=60)
    ax.set_yscale("log")
    ax.set_ylabel("gradient SNR |E g| / sd g")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return save(fig, path)


def save_run_plots(run) -> None:
    """Every plot of a finished run, as PNGs in its folder."""
    d, vae, data = run.out_dir, run.vae, run.data
    elbo_curves(run.metrics["epochs"], d / "elbo.png", pixels=data.pixels)
    reconstructions(vae, data.test_x, data.image_shape, path=d / "reconstructions.png")
    samples(vae, data.image_shape, path=d / "samples.png")
    latent_scatter(vae, data.test_x, data.test_y, path=d / "latent.png")
    if vae.z_dim == 2:
        latent_manifold(vae, data.image_shape, path=d / "manifold.png")
