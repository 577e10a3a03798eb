"""The final test metrics of a trained model: test ELBO with its terms, importance-sampled
log p(x), their gap, bits per dimension and the model's own extra metrics.

:func:`pyro_vae.training.train.finish` records them in ``metrics.json`` (key ``final``) and each
image's IS log p(x) in ``test_log_px.pt`` (:data:`pyro_vae.inference.evaluate.PER_IMAGE_NAME`),
from which ``pyro-vae compare`` computes paired differences between runs.
"""

from __future__ import annotations

import torch
from torch import nn

from pyro_vae.inference.evaluate import chunk_for_memory, elbo_terms, importance_log_px, summarize
from pyro_vae.models.likelihoods import bits_per_dim


@torch.no_grad()
def final_metrics(
    vae: nn.Module, x: torch.Tensor, num_samples: int, y: torch.Tensor | None = None, per_image: dict | None = None
) -> dict:
    """Test ELBO with its two terms, IS log p(x) with K = ``num_samples``, and their gap (nats/image),
    with bits per dimension (``elbo_bpd``, ``is_bpd``; see :func:`pyro_vae.models.likelihoods.bits_per_dim`).

    Both are of the arguments the model's ``evaluation_args(x, y)`` gives: log p(x|y) for a ``cvae``,
    log p(x) with y marginalized for an ``ssvae`` (IS proposal q(y|x) q(z|x, y)); the model's
    ``extra_metrics`` are added (generative classification, the accuracy of q(y|x)).

    :param Tensor x: ``(N, D)`` test images; ``y`` ``(N,)`` their labels (needed by conditional models).
    :param dict per_image: if given, receives ``"is_log_px"``, each image's IS log p(x) ``(N,)``.
    """
    vae.eval()
    args = vae.evaluation_args(x, y)
    out = summarize(elbo_terms(vae.model, vae.guide, *args))
    chunk = chunk_for_memory(vae, vae.model, vae.guide, *args)  # a few hundred MiB, whatever the images
    log_px = importance_log_px(vae.model, vae.guide, *args, num_samples=num_samples, chunk_size=chunk)
    out.update(summarize({"is_log_px": log_px}))
    if per_image is not None:
        per_image["is_log_px"] = log_px
    out["is_num_samples"] = num_samples
    out["evidence"] = vae.evidence
    out["gap"] = out["is_log_px"] - out["elbo"]
    out["elbo_bpd"], out["is_bpd"] = (bits_per_dim(out[k], x.shape[1]) for k in ("elbo", "is_log_px"))
    out.update(vae.extra_metrics(x, y, num_samples))
    return out


__all__ = ["final_metrics"]
