"""ELBO estimators by name, all usable as the ``loss`` of ``pyro.infer.SVI``.

From Pyro (:data:`ELBOS`):

- ``trace``: ``Trace_ELBO``, Monte Carlo KL.
- ``meanfield``: ``TraceMeanField_ELBO``, analytic KL(q‖p) where torch has one registered.
- ``tracegraph``: ``TraceGraph_ELBO``; score-function terms get the guide's baseline.
- ``iwae``: ``RenyiELBO`` with α = 0 and K particles: the importance-weighted bound,
  log-mean-exp over particles taken per datapoint.
- ``renyi``: ``RenyiELBO`` with a chosen α ∉ {1}.
- ``enum``: ``TraceEnum_ELBO``, which sums discrete latent sites marked for enumeration exactly
  (M2's class y); :class:`pyro_vae.SSVAE` accepts it and ``tracegraph`` (y sampled, with a baseline).

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
from torch.distributions import kl_divergence

from pyro_vae.errors import IncompatibleEstimator, IncompatiblePair, RegistryError, UsageError
from pyro_vae.inference.estimators import MAX_PLATE_NESTING, STL_ELBO, DReG_IWAE, _latent_sites


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


#: Estimators by ``--elbo`` name; add one with :func:`register_elbo`.
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
        raise RegistryError(f"unknown estimator {name!r}; choose one of {', '.join(ELBOS)}") from None


def build_elbo(name: str, num_particles: int = 1, alpha: float = 0.5, jit: bool = False) -> ELBO:
    """The estimator ``name`` with K = ``num_particles`` vectorized particles.

    :raises ValueError: for an unknown name, K < 1, α = 1 for ``renyi``, or ``jit`` where the
        estimator has no JIT variant.
    """
    est = get_elbo(name)
    if not isinstance(num_particles, int) or num_particles < 1:
        raise UsageError(f"particles must be a positive integer, got {num_particles!r}")
    if jit and not est.has_jit:
        jits = ", ".join(n for n, e in ELBOS.items() if e.has_jit)
        raise IncompatiblePair(f"estimator {name!r} has no JIT variant; drop --jit or use one of {jits}")
    if name == "renyi" and alpha == 1:
        raise UsageError("renyi needs alpha != 1 (alpha = 1 is the ELBO: use --elbo trace)")
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
