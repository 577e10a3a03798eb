"""Models by name: ``--model`` picks a class of :data:`MODELS`.

Each class owns what training and evaluation need of it (:class:`pyro_vae.vae.BaseVAE`): how it is
built from its config, what one training batch passes to it, the estimators it accepts, its
metrics and its plots. Register your own with :func:`register_model`.
"""

from __future__ import annotations

from .cvae import CVAE
from .ssvae import SSVAE
from .vae import VAE, BaseVAE

MODELS: dict[str, type[BaseVAE]] = {"vae": VAE, "cvae": CVAE, "ssvae": SSVAE}


def register_model(name: str, cls: type[BaseVAE]) -> type[BaseVAE]:
    """Make ``cls`` (a :class:`~pyro_vae.vae.BaseVAE` subclass) available as ``--model name``."""
    if not (isinstance(cls, type) and issubclass(cls, BaseVAE)):
        raise TypeError(f"a model must be a subclass of pyro_vae.vae.BaseVAE, got {cls!r}")
    MODELS[name] = cls
    return cls


def get_model(name: str) -> type[BaseVAE]:
    """:raises ValueError: for an unknown name, listing the registered ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def name_of(model: BaseVAE) -> str:
    """The registry name of a built model."""
    return next(name for name, cls in MODELS.items() if type(model) is cls)


def accepting(option: str) -> list[str]:
    """The names of the models whose config takes ``option`` (a ModelConfig field)."""
    return [name for name, cls in MODELS.items() if option in cls.config_options]


def semi_supervised() -> list[str]:
    """The names of the models that train on a drawn subset of the labels."""
    return [name for name, cls in MODELS.items() if cls.semi_supervised]
