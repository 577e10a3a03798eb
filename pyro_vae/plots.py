"""Figures of a run. Each function returns a matplotlib ``Figure`` (shown inline in notebooks)
and, given ``path``, also saves it as a PNG, atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from pyro_vae.atomic import atomic_write
from pyro_vae.errors import UsageError


def save(fig: Figure, path: str | Path | None) -> Figure:
    """Write ``fig`` to ``path`` as PNG, atomically, when a path is given; :returns: ``fig``."""
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


def reconstructions(
    vae, x: Tensor, image_shape: Sequence[int], n: int = 10, path: str | Path | None = None, y: Tensor | None = None
) -> Figure:
    """The first ``n`` rows of ``x`` (top) above the decoded posterior means (bottom).

    :param Tensor y: ``(N,)`` labels (a conditional model encodes and decodes with them).
    """
    x = x[:n]
    rec = vae.reconstruct(x, None if y is None else y[:n])
    fig = Figure(figsize=(n * 0.7, 1.6))
    _show_grid(fig.subplots(), torch.cat([x, rec]), image_shape, nrow=len(x))
    fig.suptitle("inputs (top) and reconstructions (bottom)", fontsize=9)
    return save(fig, path)


def grid(images: Tensor, image_shape: Sequence[int], path: str | Path | None = None) -> Figure:
    """``(n, D)`` images in a square-ish grid."""
    n = len(images)
    nrow = max(1, int(n**0.5))
    fig = Figure(figsize=(nrow * 0.6, (n / nrow) * 0.6))
    _show_grid(fig.subplots(), images, image_shape, nrow=nrow)
    return save(fig, path)


def samples(vae, image_shape: Sequence[int], n: int = 64, path: str | Path | None = None) -> Figure:
    """The means of p(x|z) for ``n`` draws z ~ p(z), in a square-ish grid; for a model with
    classes, one row per class (:func:`class_samples`, about ``n`` images in all)."""
    if vae.num_classes:
        return class_samples(vae, image_shape, max(1, n // vae.num_classes), path)
    return grid(vae.sample(n), image_shape, path)


def samples_words(vae, n: int = 64) -> str:
    """What :func:`samples` draws, in words: ``"64 samples"`` or ``"6 samples of each of the 10 classes"``."""
    if vae.num_classes:
        return f"{max(1, n // vae.num_classes)} samples of each of the {vae.num_classes} classes"
    return f"{n} samples"


def _projection(z: Tensor) -> tuple[Tensor, Tensor, tuple[str, str]]:
    """The centre and the (z_dim, 2) map onto the first two principal components of ``z`` (the
    identity's first two columns, uncentred, when z_dim = 2), and the axis labels."""
    if z.shape[1] > 2:
        centre = z.mean(0)
        _, _, v = torch.pca_lowrank(z - centre, q=2, center=False)
        return centre, v, ("PC 1", "PC 2")
    return torch.zeros(z.shape[1]), torch.eye(z.shape[1])[:, :2], ("z[0]", "z[1]")


def latent_scatter(vae, x: Tensor, y: Tensor, path: str | Path | None = None, prior: bool = False) -> Figure:
    """Posterior means coloured by label; their first two PCA components when z_dim > 2.

    A conditional model encodes each x with its label y. With ``prior=True`` (a model with
    ``prior_moments()``, e.g. a :class:`~pyro_vae.models.cvae.CVAE`), each class's prior p(z|y) is drawn
    on top: its mean as a labelled cross and its 1-sd ellipse. The projection is linear, so the
    projected prior is exactly Gaussian: mean Vᵀ(μ_y − c), covariance Vᵀ diag(σ_y²) V.
    """
    z = vae.encode(x, y)[0].cpu()
    centre, v, labels = _projection(z)
    zp = (z - centre) @ v  # (N, 2)
    classes = vae.num_classes or int(y.max()) + 1
    fig = Figure(figsize=(5, 4.3))
    ax = fig.subplots()
    points = ax.scatter(zp[:, 0], zp[:, 1], c=y.cpu(), cmap="tab10", s=4, alpha=0.5, vmin=-0.5, vmax=classes - 0.5)
    fig.colorbar(points, ax=ax, label="label")
    if prior:
        from matplotlib.patches import Ellipse

        loc, scale = (t.cpu() for t in vae.prior_moments())  # (classes, z_dim) each
        cmap = points.get_cmap()
        for k, (mu, sd) in enumerate(zip(loc, scale)):
            m = (mu - centre) @ v  # (2,)
            cov = v.T @ torch.diag(sd**2) @ v  # (2, 2)
            evals, evecs = torch.linalg.eigh(cov)
            angle = torch.rad2deg(torch.atan2(evecs[1, 1], evecs[0, 1])).item()
            w, h = 2 * evals.clamp_min(0).sqrt().flip(0)
            colour = cmap(points.norm(k))
            ax.add_patch(Ellipse(m.tolist(), w.item(), h.item(), angle=angle, fill=False, color=colour, lw=1.5))
            ax.plot(*m.tolist(), "x", color="black", ms=7, mew=2)
            ax.annotate(str(k), m.tolist(), textcoords="offset points", xytext=(4, 4), fontsize=8, weight="bold")
        ax.set_title("posterior means; prior p(z|y): mean × and 1-sd ellipse", fontsize=8)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    return save(fig, path)


def class_samples(model, image_shape: Sequence[int], n: int = 10, path: str | Path | None = None) -> Figure:
    """One row per class: the means of p(x|z, y) for ``n`` draws z ~ p(z|y), for a conditional model."""
    k = model.num_classes
    images = torch.cat([model.sample(n, y) for y in range(k)])  # (k·n, D)
    fig = Figure(figsize=(n * 0.6, k * 0.6))
    _show_grid(fig.subplots(), images, image_shape, nrow=n)
    fig.suptitle("class-conditional samples: one row per class 0..%d" % (k - 1), fontsize=9)
    return save(fig, path)


def style_transfer(model, x: Tensor, y: Tensor, image_shape: Sequence[int], path: str | Path | None = None) -> Figure:
    """Each row: an input x (first column), then x encoded with its own label y, z = mean of
    q(z|x, y), decoded with every class y' = 0, 1, ..., K−1: the style of x, the content of y'.

    z moves to class y' through the prior first (:meth:`pyro_vae.models.base.ConditionalModel.transfer`),
    μ_{y'} + σ_{y'}(z − μ_y)/σ_y; under N(0, I) for every class z is kept."""
    k = model.num_classes
    z = model.encode(x, y)[0]  # (n, z_dim)
    classes = torch.arange(k, device=z.device)
    rows = []
    for i in range(len(x)):
        zi = model.transfer(z[i].expand(k, -1), y[i].to(z.device), classes)  # (k, z_dim)
        rows.append(torch.cat([x[i : i + 1], model.decode(zi, classes)]))
    fig = Figure(figsize=((k + 1) * 0.6, len(x) * 0.6))
    _show_grid(fig.subplots(), torch.cat(rows), image_shape, nrow=k + 1)
    fig.suptitle("input, then decoded with each class 0..%d" % (k - 1), fontsize=9)
    return save(fig, path)


def latent_manifold(vae, image_shape: Sequence[int], n: int = 20, path: str | Path | None = None) -> Figure:
    """For z_dim = 2: decode an ``n × n`` grid of quantiles pushed through the Normal inverse CDF."""
    if vae.z_dim != 2:
        raise UsageError(f"the latent manifold needs z_dim = 2, got z_dim = {vae.z_dim}")
    q = torch.linspace(0.5 / n, 1 - 0.5 / n, n)
    z1 = torch.distributions.Normal(0.0, 1.0).icdf(q)
    zz = torch.stack(torch.meshgrid(z1, z1.flip(0), indexing="xy"), -1).reshape(-1, 2)  # (n*n, 2)
    fig = Figure(figsize=(6, 6))
    _show_grid(fig.subplots(), vae.decode(zz.to(vae.prior_loc.device)), image_shape, nrow=n)
    return save(fig, path)


def elbo_vs_time(cells: Sequence[dict], path: str | Path | None = None) -> Figure:
    """Test ELBO against cumulative training seconds, one line per compare cell.

    :param cells: dicts with ``guide``, ``elbo``, ``K``, ``seed`` and ``curve``, a list of
        (epoch seconds, test ELBO) pairs (see :mod:`pyro_vae.experiments.grid`).
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


RUN_PLOTS = {  # name ↦ (file, draw(model, data, path)): what a model's run_plots names
    "samples": ("samples.png", lambda m, data, path: samples(m, data.image_shape, path=path)),
    "style_transfer": (
        "style_transfer.png",
        lambda m, data, path: style_transfer(m, data.test_x[:8], data.test_y[:8], data.image_shape, path=path),
    ),
    "manifold": ("manifold.png", lambda m, data, path: latent_manifold(m, data.image_shape, path=path)),
}


def save_run_plots(run) -> None:
    """Every plot of a finished run, as PNGs in its folder: the ELBO curves, reconstructions, the
    latent scatter (labelled images only; with the prior of a model that has one per class), and
    the plots the model names in ``run_plots`` (:data:`RUN_PLOTS`).
    """
    d, vae, data = run.out_dir, run.vae, run.data
    elbo_curves(run.metrics["epochs"], d / "elbo.png", pixels=data.pixels)
    reconstructions(vae, data.test_x, data.image_shape, path=d / "reconstructions.png", y=data.test_y)
    for name in vae.run_plots:
        file, draw = RUN_PLOTS[name]
        draw(vae, data, d / file)
    if data.test_y is not None:  # coloured by class: only for labelled images
        latent_scatter(vae, data.test_x, data.test_y, path=d / "latent.png", prior=hasattr(vae, "prior_moments"))
