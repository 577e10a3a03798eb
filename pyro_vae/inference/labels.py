"""Metrics of conditional models (``model(x, y)``, ``sample(n, y)``, ``decode(z, y)``, ``encode(x, y)``):

- :func:`class_log_likelihoods` and :func:`generative_classify`: log p̂(x|y = k) for every class,
  and argmax_y of it;
- :func:`label_fidelity`: the fraction of the samples asked for class k that a judge classifier
  (:mod:`pyro_vae.inference.judge`) reads as k;
- :func:`label_sensitivity`: how much the decoded image moves when only the label changes;
- :func:`conditional_metrics`: the three of them for a run's final metrics.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_vae.inference.evaluate import DEFAULT_CHUNK, importance_log_px


# ----------------------------------------------------------------------------- conditional metrics
@torch.no_grad()
def class_log_likelihoods(
    model, guide, x: Tensor, num_classes: int, num_samples: int = 100, chunk_size: int = DEFAULT_CHUNK
) -> Tensor:
    """Importance-sampled log p(x|y = k) for every image and every class k.

    One :func:`importance_log_px` pass per class, with every label set to it; each bounds the
    memory by at most ``chunk_size`` (particle, image) evaluations per forward pass.

    :param model: ``model(x, y)`` of a conditional model (e.g. :meth:`pyro_vae.CVAE.model`).
    :param guide: ``guide(x, y)``.
    :param Tensor x: ``(N, D)``.
    :param int num_samples: importance samples per (image, class).
    :returns: ``(N, num_classes)`` nats.
    """
    per_class = [
        importance_log_px(
            model, guide, x, torch.full((len(x),), k, device=x.device), num_samples=num_samples, chunk_size=chunk_size
        )
        for k in range(num_classes)
    ]  # K × (N,)
    return torch.stack(per_class, -1)  # (N, K)


@torch.no_grad()
def generative_classify(
    model,
    guide,
    x: Tensor,
    num_classes: int,
    num_samples: int = 100,
    log_prior_y: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[Tensor, Tensor]:
    """Generative classification: ŷ = argmax_y [log p̂(x|y) + log p(y)], with log p̂(x|y) from
    :func:`class_log_likelihoods`.

    :param Tensor log_prior_y: ``(num_classes,)`` log p(y); default uniform (it does not change
        the argmax then).
    :returns: the predictions ``(N,)`` int64 and the log posterior scores ``(N, num_classes)``.
    """
    scores = class_log_likelihoods(model, guide, x, num_classes, num_samples, chunk_size)
    if log_prior_y is not None:
        scores = scores + log_prior_y.to(scores.device)
    return scores.argmax(-1), scores


@torch.no_grad()
def label_fidelity(model, judge, n_per_class: int = 200, seed: int = 0) -> dict:
    """How often a conditional model draws the class it is asked for.

    For each class k, ``n_per_class`` samples ``model.sample(n, k)`` (the means of p(x|z, y=k)
    with z ~ p(z|y=k)) are read by ``judge.predict``; the fidelity of class k is the fraction read
    as k. With n samples per class its binomial standard error is √(f(1−f)/n), at most 0.035 per
    class and 0.011 for the mean over 10 classes at n = 200. The global RNGs are left untouched.

    :param model: a conditional model (``num_classes``, ``sample(n, y)``).
    :param judge: anything with ``predict(x) -> (N,)`` labels (e.g. a :class:`pyro_vae.inference.judge.Judge`).
    :returns: ``{"label_fidelity": mean over classes, "label_fidelity_per_class": [K floats],
        "fidelity_samples_per_class": n}``.
    """
    per_class = []
    with torch.random.fork_rng(devices=_devices(model)):
        torch.manual_seed(seed)
        for k in range(model.num_classes):
            x = model.sample(n_per_class, k)  # (n, D)
            per_class.append((judge.predict(x) == k).float().mean().item())
    return {
        "label_fidelity": sum(per_class) / len(per_class),
        "label_fidelity_per_class": per_class,
        "fidelity_samples_per_class": n_per_class,
    }


@torch.no_grad()
def label_sensitivity(model, x: Tensor, y: Tensor, seed: int = 0) -> float:
    """How much the label moves the decoded image, relative to how much images differ.

    Each image is encoded with its own label (z the mean of q(z|x, y)), then decoded with its
    label and with another one, y' = y + u mod K with u uniform on 1..K−1. The numerator is the
    mean ``|decode(z, y') − decode(z, y)|`` over pixels and images; the denominator the mean ``|x_i − x_j|``
    over pixels, for each image x_i paired with another test image x_j (a random derangement).
    About 0 for a decoder that ignores y; about 1 when a change of label changes the image as much
    as drawing another image does.

    :param Tensor x: ``(N, D)`` test images, N ≥ 2; ``y`` ``(N,)`` their labels.
    :returns: the ratio (a float).
    """
    k = model.num_classes
    with torch.random.fork_rng(devices=_devices(model)):
        torch.manual_seed(seed)
        other = (y + torch.randint(1, k, y.shape, device=y.device)) % k
        perm = torch.randperm(len(x), device=x.device)
    z = model.encode(x, y)[0]  # (N, z_dim)
    moved = (model.decode(z, other) - model.decode(z, y)).abs().mean()
    pairs = (x[perm] - x[perm.roll(1)]).abs().mean()  # each image against another one
    return (moved / pairs).item()


def _devices(model) -> list:
    return [p.device for p in model.parameters() if p.device.type == "cuda"][:1]


def conditional_metrics(
    model,
    data,
    *,
    data_dir: str | None = None,
    judge=None,
    n_per_class: int = 200,
    seed: int = 0,
    cache_dir=None,
) -> dict:
    """The label metrics of a conditional model for a run's final metrics (``metrics.json``) and
    ``pyro-vae evaluate``: ``label_fidelity``, ``label_fidelity_per_class``,
    ``fidelity_samples_per_class``, ``judge_accuracy`` and ``label_sensitivity``.

    :param data: the run's :class:`pyro_vae.data.images.ImageData`: the judge is trained on its training
        images with all their labels (or read from the cache, see
        :func:`pyro_vae.inference.judge.load_or_train_judge`), and the sensitivity is measured on its test set.
    :param str data_dir: the folder the data came from (``config.data.data_dir``), part of the cache key.
    :param judge: a judge to use instead (``predict(x)`` and ``accuracy``).
    """
    from pyro_vae.inference.judge import load_or_train_judge

    if judge is None:
        judge = load_or_train_judge(data, data_dir, cache_dir)
    out = label_fidelity(model, judge, n_per_class, seed)
    out["judge_accuracy"] = float(judge.accuracy)
    out["label_sensitivity"] = label_sensitivity(model, data.test_x, data.test_y, seed)
    return out
