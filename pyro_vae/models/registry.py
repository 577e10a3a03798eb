"""Models by name: ``--model`` picks a class of :data:`MODELS`.

Each class owns what training and evaluation need of it (:class:`pyro_vae.models.base.BaseVAE`): how it is
built from its config, what one training batch passes to it, the estimators it accepts, its
metrics and its plots. Register your own with :func:`register_model`.
"""

from __future__ import annotations

import os

import torch

from pyro_vae.config import RunConfig, options_of, resolve_device
from pyro_vae.errors import ConfigError, RegistryError
from pyro_vae.inference.elbos import ELBOS, check_estimator
from pyro_vae.models.base import BaseVAE, ConditionalModel
from pyro_vae.models.cvae import CVAE
from pyro_vae.models.priors import PRIORS, check_prior, check_prior_estimator, get_prior
from pyro_vae.models.ssvae import SSVAE
from pyro_vae.models.vae import VAE

#: Model classes by ``--model`` name; add one with :func:`register_model`.
MODELS: dict[str, type[BaseVAE]] = {"vae": VAE, "cvae": CVAE, "ssvae": SSVAE}


def register_model(name: str, cls: type[BaseVAE]) -> type[BaseVAE]:
    """Make ``cls`` (a :class:`~pyro_vae.models.base.BaseVAE` subclass) available as ``--model name``."""
    if not (isinstance(cls, type) and issubclass(cls, BaseVAE)):
        raise RegistryError(f"a model must be a subclass of pyro_vae.models.base.BaseVAE, got {cls!r}")
    MODELS[name] = cls
    return cls


def get_model(name: str) -> type[BaseVAE]:
    """:raises ValueError: for an unknown name, listing the registered ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise RegistryError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def _own_options(cls: type[BaseVAE]) -> tuple[str, ...]:
    return (*cls.config_options, *cls.reads)


def accepting(option: str) -> list[str]:
    """The names of the models that take config field ``option``: those that declare it
    (:attr:`~pyro_vae.models.base.BaseVAE.config_options`, :attr:`~pyro_vae.models.base.BaseVAE.reads`),
    or every model for a field that none declares (``z_dim``, ``lr``…)."""
    takers = [name for name, cls in MODELS.items() if option in _own_options(cls)]
    return takers or list(MODELS)


def options_only_for_others(name: str) -> set[str]:
    """The config fields that some models take and model ``name`` does not."""
    own = set(_own_options(get_model(name)))
    return {o for cls in MODELS.values() for o in _own_options(cls)} - own


def option_note(option: str) -> str:
    """What ``--help`` adds to config field ``option``'s help: the models that take it, when not
    all do, and each model's default of it, e.g. ``"(--model cvae, ssvae; default cvae 2.5, ssvae 4)"``;
    ``""`` for a field every model takes with the dataclass default."""
    takers = accepting(option)
    defaults = [(name, MODELS[name].default_of(option)) for name in takers]
    defaults = [f"{name} {d}" for name, d in defaults if d is not None]
    parts = ([] if len(takers) == len(MODELS) else [f"--model {', '.join(takers)}"]) + (
        [f"default {', '.join(defaults)}"] if defaults else []
    )
    return f" ({'; '.join(parts)})" if parts else ""


def semi_supervised() -> list[str]:
    """The names of the models that train on a drawn subset of the labels."""
    return [name for name, cls in MODELS.items() if cls.semi_supervised]


def build_model(config: RunConfig, image_shape: tuple[int, ...], num_classes: int = 10) -> BaseVAE:
    """The model ``config.model.model`` names (:data:`pyro_vae.models.registry.MODELS`), for images of
    ``image_shape``, built by its class's ``from_config``.

    :raises ConfigError: when training the model would need more memory than the device has
        (a huge ``z_dim`` or ``hidden_dims``), before anything is allocated.
    """
    cls = get_model(config.model.model)
    _check_model_size(cls, config, tuple(image_shape), num_classes)
    try:
        return cls.from_config(config.model, tuple(image_shape), num_classes)
    except (MemoryError, torch.OutOfMemoryError):
        raise _too_big(config, None, None) from None


def _too_big(config: RunConfig, params: int | None, available: int | None) -> ConfigError:
    m = config.model
    size = f"{params:,} parameters need about {4 * 4 * params / 2**30:.1f} GiB to train, " if params else ""
    have = f"more than the {available / 2**30:.1f} GiB available" if available else "more memory than is available"
    return ConfigError(
        "z_dim",
        f"{m.z_dim} with hidden_dims {list(m.hidden_dims)} is too large: {size}{have}; choose smaller sizes",
    )


def _available_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_model_size(cls: type[BaseVAE], config: RunConfig, shape: tuple[int, ...], num_classes: int) -> None:
    """Count the parameters on the meta device (no memory) and compare weights, gradients and
    Adam's two moments (4 float32 copies) with the memory available."""
    try:
        with torch.device("meta"):
            params = sum(p.numel() for p in cls.from_config(config.model, shape, num_classes).parameters())
    except Exception:  # a network that cannot be built on the meta device: the real build decides
        return
    available = _available_memory(resolve_device(config.train.device))
    if available is not None and 16 * params > available:
        raise _too_big(config, params, available)


def check_model_options(config: RunConfig) -> None:
    """The options that only some models take (:attr:`~pyro_vae.models.base.BaseVAE.config_options`,
    :attr:`~pyro_vae.models.base.BaseVAE.reads`) apply only to those: one given (not ``None``) to
    another model is refused.

    :raises ConfigError: naming the option, the model given and the models that take it.
    :raises IncompatiblePair: for a prior the model, the guide or the estimator cannot take
        (:func:`pyro_vae.models.priors.check_prior`, :func:`~pyro_vae.models.priors.check_prior_estimator`).
    """
    m = config.model
    fields = {o.name: (section, o) for section in (config.data, m, config.train) for o in options_of(type(section))}
    declared = dict.fromkeys(name for cls in MODELS.values() for name in _own_options(cls))
    # an option whose default is None is given when set; one with a value by default cannot tell
    given = {n: getattr(fields[n][0], n) for n in declared if n in fields and fields[n][1].default is None}
    for name, value in given.items():
        takers = accepting(name)
        if value is None or m.model in takers:
            continue
        which = f"model {takers[0]!r}" if len(takers) == 1 else f"the models {', '.join(takers)}"
        raise ConfigError(
            name,
            f"applies to {which} only, got {name}={value!r} with model {m.model!r}; drop it or use "
            + (f"model {takers[0]!r}" if len(takers) == 1 else "one of them"),
        )
    prior = m.prior or get_model(m.model).defaults_for(m).get("prior")
    if prior is None:
        return
    if m.prior_components is not None and get_prior(prior).components is None:
        takers = " and ".join(repr(n) for n, p in PRIORS.items() if p.components is not None)
        raise ConfigError(
            "prior_components", f"applies to priors {takers} only, got {m.prior_components} with prior {prior!r}"
        )
    check_prior(prior, m.model, issubclass(get_model(m.model), ConditionalModel), m.guide)
    if config.train.elbo is not None and config.train.elbo in ELBOS:
        check_prior_estimator(prior, config.train.elbo, ELBOS[config.train.elbo].needs_analytic_kl)


def check_config(config: RunConfig) -> None:
    """Every check a run's config passes before anything is read or written: each field
    (:meth:`~pyro_vae.config.RunConfig.validate`), the model options against the model
    (:func:`check_model_options`) and the estimator against the model
    (:func:`~pyro_vae.inference.elbos.check_estimator`). ``fit``, ``resume`` and ``evaluate`` run it.

    :raises ConfigError: for a field or option, naming it.
    :raises IncompatibleEstimator: for an estimator the model does not accept.
    :raises IncompatiblePair: for a prior that the model, guide or estimator cannot take.
    """
    config.validate()
    check_model_options(config)
    if config.train.elbo is not None:
        check_estimator(get_model(config.model.model), config.train.elbo)
