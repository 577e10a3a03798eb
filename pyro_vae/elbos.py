"""ELBO estimators by name, all usable as the ``loss`` of ``pyro.infer.SVI``.

From Pyro (:data:`ELBOS`):

- ``trace``: ``Trace_ELBO``, Monte Carlo KL.
- ``meanfield``: ``TraceMeanField_ELBO``, analytic KL(q‖p) where torch has one registered.
- ``tracegraph``: ``TraceGraph_ELBO``; score-function terms get the guide's baseline.
- ``iwae``: ``RenyiELBO`` with α = 0 and K particles: the importance-weighted bound,
  log-mean-exp over particles taken per datapoint.
- ``renyi``: ``RenyiELBO`` with a chosen α ∉ {1}.
- ``enum``: ``TraceEnum_ELBO``, which sums discrete latent sites marked for enumeration exactly
  (M2's class y); the only estimator :class:`pyro_vae.SSVAE` accepts.

A model declares what it accepts: ``estimators``, a tuple of names (``None``: every estimator
that enumerates nothing), and ``default_estimator``. :func:`check_estimator` fails up front with
:class:`IncompatibleEstimator`, naming both.

Beyond Pyro, subclasses of ``pyro.infer.ELBO``:

- ``stl``: "sticking the landing", the ELBO gradient with the score term of q dropped
  (Roeder et al. 2017). Same expectation as ``trace``; zero variance at q = p(z|x).
- ``dreg``: the doubly-reparameterized IWAE gradient (Tucker et al. 2019): IWAE's gradient for
  the model, Σ_k w̃_k² ∂log w_k/∂z_k ∂z_k/∂φ for the guide.

Particles are vectorized (an outer ``pyro.plate`` at ``dim=-2``); the data plate is ``dim=-1``.
Every loss is −(estimate) summed over the batch, averaged over particles where that applies.

References:
    Burda, Grosse & Salakhutdinov, *Importance Weighted Autoencoders*, ICLR 2016.
    Li & Turner, *Rényi Divergence Variational Inference*, NeurIPS 2016.
    Roeder, Wu & Duvenaud, *Sticking the Landing*, NeurIPS 2017.
    Tucker, Lawson, Gu & Maddison, *Doubly Reparameterized Gradient Estimators for Monte Carlo
    Objectives*, ICLR 2019.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.infer import (
    ELBO,
    JitTrace_ELBO,
    JitTraceGraph_ELBO,
    JitTraceMeanField_ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from pyro.infer.enum import get_importance_trace
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import kl_divergence

from .pathwise import path_log_prob

MAX_PLATE_NESTING = 1  # the "data" plate; vectorized particles go to dim=-2


class IncompatiblePair(ValueError):
    """An estimator that cannot train a guide (or cannot run with ``--jit``); the message says why."""


def _sample_sites(tr) -> list[dict]:
    return [s for s in tr.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def _latent_sites(tr) -> list[dict]:
    return [s for s in _sample_sites(tr) if not s["is_observed"]]


class _PathwiseELBO(ELBO):
    """Shared machinery: one vectorized trace, and per-particle, per-datapoint log weights."""

    def __init__(self, num_particles: int = 1):
        super().__init__(num_particles=num_particles, max_plate_nesting=MAX_PLATE_NESTING, vectorize_particles=True)

    def _get_trace(self, model, guide, args, kwargs):
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    def _log_weights(self, model, guide, args, kwargs, path: bool = True) -> tuple[Tensor, Tensor, tuple]:
        """:returns: log w and its path-derivative surrogate s, each ``(K, batch)``, and the traces.

        s has the value of log w = log p(x, z) − log q(z|x), but its gradient for the guide's
        parameters φ flows only through z: log q is :func:`pyro_vae.pathwise.path_log_prob`,
        log q_φ̄(z) with φ̄ = stop_grad(φ) (for a flow, without inverting it). ``path=False``: s is log w.
        """
        model_tr, guide_tr = self._get_vectorized_trace(model, guide, args, kwargs)
        log_p = sum(s["log_prob"] for s in _sample_sites(model_tr))
        log_w, surrogate = log_p, log_p
        for site in _latent_sites(guide_tr):
            if not site["fn"].has_rsample:
                raise ValueError(f"site {site['name']!r} has no rsample; this estimator needs a reparameterized guide")
            log_w = log_w - site["log_prob"]
            surrogate = surrogate - path_log_prob(site) if path else log_w
        if self.num_particles == 1:
            log_w, surrogate = log_w.unsqueeze(0), surrogate.unsqueeze(0)
        return log_w, surrogate, (model_tr, guide_tr)

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs) -> float:
        return self._loss(self._log_weights(model, guide, args, kwargs, path=False)[0]).item()

    def _loss(self, log_w: Tensor) -> Tensor:
        raise NotImplementedError


class STL_ELBO(_PathwiseELBO):
    """ "Sticking the landing": the ELBO with the score term of q dropped from the gradient.

    The loss is −mean_k Σ_batch log w_k, as ``Trace_ELBO``; the guide's gradient is
    E_q[∂/∂z (log p(x, z) − log q(z|x)) ∂z/∂φ], which is unbiased and vanishes at q = p(z|x).
    Needs a reparameterized guide.
    """

    def _loss(self, log_w: Tensor) -> Tensor:
        return -log_w.mean(0).sum()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> Tensor:
        _, surrogate, _ = self._log_weights(model, guide, args, kwargs)
        return self._loss(surrogate)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


class DReG_IWAE(_PathwiseELBO):
    """The IWAE bound with the doubly-reparameterized gradient estimator.

    Loss: −Σ_batch [logsumexp_k log w_k − log K]. Gradients: for the model (decoder) parameters,
    IWAE's Σ_k w̃_k ∇ log w_k; for the guide parameters, Σ_k w̃_k² ∂log w_k/∂z_k ∂z_k/∂φ, where
    w̃ are the normalized weights. Both are unbiased for the gradient of the IWAE bound.
    Needs a reparameterized guide.

    One backward pass: the surrogate Σ_k w̃_k s_k (s the path-derivative log weight) gives IWAE's
    model gradient and Σ_k w̃_k ∂log w_k/∂z_k ∂z_k/∂φ for the guide; a hook on each latent value
    z_k multiplies the gradient reaching it by w̃_k once more. With the latent site scaled by β
    (KL warm-up: log w = log p(x|z) + β(log p(z) − log q(z|x))) the score term carries β, and the
    guide's weight becomes (1 − β) w̃_k + β w̃_k², so the hook multiplies by 1 − β + β w̃_k. For
    that, the path derivative of log q(z_k|x) passes through z_k (:func:`pyro_vae.pathwise.path_log_prob`,
    which for a flow reads the sample's intermediate values from the flow's cache instead of
    inverting it).
    """

    def _loss(self, log_w: Tensor) -> Tensor:
        return -(torch.logsumexp(log_w, 0) - math.log(self.num_particles)).sum()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        log_w, surrogate, (model_tr, guide_tr) = self._log_weights(model, guide, args, kwargs)
        latents = _latent_sites(guide_tr)
        weights = torch.softmax(log_w.detach(), 0)  # (K, batch), normalized over particles
        obs_scale = next((s["scale"] for s in _sample_sites(model_tr) if s["is_observed"]), 1.0)
        for site in latents:
            z = site["value"]
            if z.requires_grad:
                event_dims = (1,) * len(site["fn"].event_shape)
                w = weights.reshape(z.shape[: z.dim() - len(event_dims)] + event_dims)  # (K, batch, 1)
                beta = site["scale"] / obs_scale  # β of a KL warm-up (poutine.scale on the latent site)
                z.register_hook(lambda grad, w=w, beta=beta: grad * ((1 - beta) + beta * w))
        (-(weights * surrogate).sum()).backward()
        return self._loss(log_w.detach()).item()


@dataclass(frozen=True)
class Estimator:
    """A registered estimator.

    :ivar make: ``make(num_particles, alpha, jit)`` ↦ a ``pyro.infer.ELBO``.
    :ivar needs_reparam: refuses guides whose latent sites have no ``rsample``.
    :ivar needs_analytic_kl: refuses guide/prior pairs with no registered ``kl_divergence``.
    :ivar has_jit: whether ``jit=True`` is available.
    """

    name: str
    make: Callable[[int, float, bool], ELBO]
    description: str
    needs_reparam: bool = False
    needs_analytic_kl: bool = False
    has_jit: bool = False
    multi_particle: bool = False  # K changes the objective (not only the variance)
    enumerates: bool = False  # sums discrete sites marked for enumeration; only models that ask for it


def _no_jit_warning(method: Callable) -> Callable:
    """``method`` with torch's ``torch.jit.trace`` deprecation FutureWarning hidden from its output."""

    @functools.wraps(method)
    def quiet(self, *args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace", category=FutureWarning)
            return method(self, *args, **kwargs)

    return quiet


def _quiet(jit_cls: type[ELBO]) -> type[ELBO]:
    """A subclass of Pyro's JIT estimator whose calls hide the deprecation warning of the
    ``torch.jit.trace`` they rest on (``--compile`` replaces ``--jit``)."""
    names = ("loss", "differentiable_loss", "loss_and_grads")
    methods = {m: _no_jit_warning(getattr(jit_cls, m)) for m in names if hasattr(jit_cls, m)}
    return type(jit_cls.__name__, (jit_cls,), {**methods, "__doc__": jit_cls.__doc__})


def _pyro(cls, jit_cls=None):
    quiet_jit = _quiet(jit_cls) if jit_cls is not None else None

    def make(num_particles: int, alpha: float, jit: bool) -> ELBO:
        return (quiet_jit if jit else cls)(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=MAX_PLATE_NESTING,
        )

    return make


def _renyi(fixed_alpha: float | None):
    def make(num_particles: int, alpha: float, jit: bool) -> ELBO:
        return RenyiELBO(
            alpha=fixed_alpha if fixed_alpha is not None else alpha,
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=MAX_PLATE_NESTING,
        )

    return make


ELBOS: dict[str, Estimator] = {}


def register_elbo(estimator: Estimator) -> Estimator:
    """Add an estimator to :data:`ELBOS` (and so to ``--elbo`` and every parametrized test)."""
    ELBOS[estimator.name] = estimator
    return estimator


register_elbo(Estimator("trace", _pyro(Trace_ELBO, JitTrace_ELBO), "Trace_ELBO, Monte Carlo KL", has_jit=True))
register_elbo(
    Estimator(
        "meanfield",
        _pyro(TraceMeanField_ELBO, JitTraceMeanField_ELBO),
        "TraceMeanField_ELBO, analytic KL(q‖p)",
        needs_reparam=True,
        needs_analytic_kl=True,
        has_jit=True,
    )
)
register_elbo(
    Estimator(
        "tracegraph",
        _pyro(TraceGraph_ELBO, JitTraceGraph_ELBO),
        "TraceGraph_ELBO, score-function terms with baselines",
        has_jit=True,
    )
)
register_elbo(
    Estimator(
        "iwae", _renyi(0.0), "RenyiELBO α=0: the importance-weighted bound", needs_reparam=True, multi_particle=True
    )
)
register_elbo(Estimator("renyi", _renyi(None), "RenyiELBO with --alpha α", needs_reparam=True, multi_particle=True))
register_elbo(
    Estimator(
        "stl",
        lambda k, alpha, jit: STL_ELBO(k),
        "sticking the landing: path-derivative ELBO gradient",
        needs_reparam=True,
    )
)
register_elbo(
    Estimator(
        "dreg",
        lambda k, alpha, jit: DReG_IWAE(k),
        "doubly-reparameterized IWAE gradient",
        needs_reparam=True,
        multi_particle=True,
    )
)


register_elbo(
    Estimator(
        "enum",
        _pyro(TraceEnum_ELBO),
        "TraceEnum_ELBO: discrete sites summed exactly by parallel enumeration (M2's y)",
        enumerates=True,
    )
)


class IncompatibleEstimator(ValueError):
    """An estimator that a model does not accept (see :func:`check_estimator`)."""


def accepted_estimators(model) -> tuple[str, ...]:
    """The names of :data:`ELBOS` that ``model`` (an instance or a class) accepts: its ``estimators``
    attribute, or, where that is ``None`` or absent, every estimator that enumerates nothing."""
    names = getattr(model, "estimators", None)
    if names is None:
        return tuple(n for n, e in ELBOS.items() if not e.enumerates)
    return tuple(n for n in names if n in ELBOS)


def check_estimator(model, name: str) -> None:
    """:raises IncompatibleEstimator: in one line naming the model and the estimator, when ``model``
    does not accept the estimator ``name`` (an unknown name is :func:`get_elbo`'s ``ValueError``)."""
    get_elbo(name)
    accepted = accepted_estimators(model)
    if name not in accepted:
        cls = model if isinstance(model, type) else type(model)
        raise IncompatibleEstimator(
            f"model {cls.__name__} does not accept estimator {name!r}; use --elbo {' or '.join(accepted)}"
        )


def get_elbo(name: str) -> Estimator:
    """:raises ValueError: for an unknown name, listing the registered ones."""
    try:
        return ELBOS[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ELBOS)}") from None


def build_elbo(name: str, num_particles: int = 1, alpha: float = 0.5, jit: bool = False) -> ELBO:
    """The estimator ``name`` with K = ``num_particles`` vectorized particles.

    :raises ValueError: for an unknown name, K < 1, α = 1 for ``renyi``, or ``jit`` where the
        estimator has no JIT variant.
    """
    est = get_elbo(name)
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"particles must be a positive integer, got {num_particles!r}")
    if jit and not est.has_jit:
        jits = ", ".join(n for n, e in ELBOS.items() if e.has_jit)
        raise IncompatiblePair(f"estimator {name!r} has no JIT variant; drop --jit or use one of {jits}")
    if name == "renyi" and alpha == 1:
        raise ValueError("renyi needs alpha != 1 (alpha = 1 is the ELBO: use --elbo trace)")
    return est.make(num_particles, alpha, jit)


def check_pair(elbo_name: str, guide_name: str, model: Callable, guide: Callable, *args, jit: bool = False) -> None:
    """Check that the estimator ``elbo_name`` can train this model/guide pair, by tracing it once.

    :param args: a small batch of model/guide inputs, e.g. ``x[:2]``.
    :param bool jit: also compile one step of the JIT variant, which torch cannot do for every
        distribution (e.g. its MVN–MVN KL); gradients of the dry run are discarded.
    :raises IncompatiblePair: naming the pair and why it does not fit: a non-reparameterized guide
        for a pathwise estimator, no closed-form KL(q‖p) for ``meanfield``, or a JIT failure.
    """
    est = get_elbo(elbo_name)
    with torch.no_grad(), poutine.block():
        guide_tr = poutine.trace(guide).get_trace(*args)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args)
    for q in _latent_sites(guide_tr):
        if est.needs_reparam and not q["fn"].has_rsample:
            raise IncompatiblePair(
                f"estimator {elbo_name!r} does not fit guide {guide_name!r}: it needs a reparameterized guide, "
                f"and site {q['name']!r} has no rsample; use --elbo trace or tracegraph"
            )
        if est.needs_analytic_kl:
            p = model_tr.nodes[q["name"]]["fn"]
            try:
                kl_divergence(q["fn"], p)
            except NotImplementedError:
                raise IncompatiblePair(
                    f"estimator {elbo_name!r} does not fit guide {guide_name!r}: TraceMeanField_ELBO needs a "
                    f"closed-form KL(q‖p), and torch registers none for {type(q['fn']).__name__} vs "
                    f"{type(p).__name__}; use --elbo trace or a Gaussian guide"
                ) from None

    if jit:
        elbo = build_elbo(elbo_name, jit=True)
        try:
            with poutine.trace(param_only=True) as params:
                elbo.loss_and_grads(model, guide, *args)
        except Exception as e:  # torch.jit errors have no common base class
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise IncompatiblePair(
                f"estimator {elbo_name!r} with --jit fails on guide {guide_name!r} ({type(e).__name__}: {first}); "
                "drop --jit"
            ) from None
        for site in params.trace.nodes.values():
            site["value"].unconstrained().grad = None
