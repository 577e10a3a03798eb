"""Typed run configuration, saved as ``config.json`` next to every run.

Each field is declared once, with :func:`option`: its default, its help, its flag and its checks.
The ``pyro-vae`` command builds its flags from these fields (:func:`options_of`), :meth:`RunConfig.validate`
checks them, and :meth:`RunConfig.load` reads ``config.json`` through the same checks, so the CLI,
the Python API and saved runs cannot disagree. Errors are :class:`ConfigError`: they name the field
in the Python API and the flag (``--num-samples``) on the command line.

This module imports only the standard library, so that the command can lock its run folder
before the heavy imports (torch, Pyro).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyro_vae.atomic import atomic_write_text
from pyro_vae.errors import ConfigError, RegistryError, UsageError

DEVICES = ("auto", "cpu", "cuda")
MAX_SIZE = 2**31 - 1  # the largest size, count or width of any field: torch's int32 indexing
MAX_SEED = 2**32 - 1  # what every RNG of torch, NumPy and Pyro takes


def resolve_device(name: str) -> typing.Any:
    """``auto`` picks CUDA when available. :raises ValueError: for unknown or unavailable names."""
    import torch  # here, not at the top: this module must not import torch

    if name not in DEVICES:
        raise RegistryError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but torch.cuda.is_available() is False; use --device cpu or auto")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def _registry(module: str, name: str) -> Callable[[], list[str]]:
    """The names of a registry, imported when first needed (the registries import torch)."""

    def names() -> list[str]:
        import importlib

        return list(getattr(importlib.import_module(f"pyro_vae.{module}"), name))

    return names


def _check(module: str, name: str) -> Callable[[str], None]:
    """A value check by a function of a module, imported when first needed (it may import torch)."""

    def check(value) -> None:
        import importlib

        getattr(importlib.import_module(f"pyro_vae.{module}"), name)(value)

    check.is_check = True
    return check


def option(
    default,
    help: str,
    *,
    flag: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    choices: Sequence | Callable[[], Sequence[str]] | None = None,
    metavar: str | tuple[str, ...] | None = None,
    length: int | None = None,
):
    """A config field: its default, its one-line help, and the checks :func:`check_field` runs.

    :param flag: the command-line flag (default ``--`` + the field name with dashes).
    :param minimum: the smallest value allowed (inclusive).
    :param maximum: the largest value allowed (inclusive); every size has one (``MAX_SIZE``),
        so that no value overflows torch's integers.
    :param bool positive: the value must be > 0.
    :param choices: the values allowed, a function returning them (a registry's keys), or a check
        made by :func:`_check` that raises ``ValueError`` for a bad value.
    :param length: the number of items of a tuple field (default: one or more).
    """
    meta = {"help": help, "flag": flag, "minimum": minimum, "maximum": maximum, "positive": positive}
    meta["choices"] = choices
    meta.update(metavar=metavar, length=length)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    dataset: str = option(
        "mnist-5k",
        "dataset: a built-in name, folder (an image folder), array (an .npz/.npy file) or torchvision:NAME[:SUBSET]",
        choices=_check("data.load", "check_dataset_name"),
    )
    data_dir: str | None = option(
        None,
        "the data: a folder of the four MNIST-format IDX files (.gz or not) or a torchvision root; for svhn, the "
        "folder with train_32x32.mat and test_32x32.mat; for folder, the image folder; for array, the .npz/.npy file",
    )
    pixels: str = option("continuous", "pixel treatment", choices=("continuous", "dynamic", "static"))
    labels: int | None = option(
        None, "keep N training labels, balanced per class (default all)", positive=True, maximum=MAX_SIZE
    )
    label_seed: int = option(
        0, "seed of the draw of the N labelled images, independent of --seed", minimum=0, maximum=MAX_SEED
    )
    image_size: tuple[int, ...] | None = option(
        None,
        "folder, torchvision:NAME: resize every image to H W (default: as read)",
        positive=True,
        maximum=2**16,
        length=2,
        metavar=("H", "W"),
    )
    channels: int | None = option(
        None, "folder, torchvision:NAME: 1 (grey) or 3 (RGB) (default: grey unless an image has colour)", choices=(1, 3)
    )
    test_fraction: float = option(
        0.1,
        "folder, array, torchvision:NAME without a test split: the share held out for testing (seeded)",
        positive=True,
    )  # and below 1: checked by pyro_vae.data.load.check_data_config
    layout: str | None = option(
        None,
        "array: nhwc or nchw when the shape leaves it ambiguous (default: from the shape)",
        choices=("nhwc", "nchw"),
    )
    max_data_memory: float = option(
        2.0,
        "folder, array (.npy), torchvision:NAME: GiB of training images (8-bit) held in memory; above it they "
        "stream from disk per batch",
        positive=True,
        metavar="GIB",
    )


@dataclass
class ModelConfig:
    z_dim: int = option(20, "latent dimension", positive=True, maximum=MAX_SIZE)
    hidden_dims: tuple[int, ...] = option(
        (400,), "MLP widths, encoder order; the decoder mirrors them", positive=True, maximum=MAX_SIZE
    )
    likelihood: str = option("bernoulli", "pixel likelihood", choices=_registry("models.likelihoods", "LIKELIHOODS"))
    guide: str = option("diag", "q(z|x) family", choices=_registry("inference.guides", "GUIDES"))
    flow_steps: int = option(2, "flow steps K of --guide iaf and the other flow guides", positive=True, maximum=1000)
    model: str = option(
        "vae",
        "the model: a name in the registry of models (pyro_vae.models.registry.MODELS)",
        choices=_registry("models.registry", "MODELS"),
    )
    net: str = option("mlp", "encoder/decoder networks", choices=_registry("models.nets", "NETS"))
    prior: str | None = option(
        None,
        "the prior p(z), or p(z|y) of a conditional model: N(0, I), learned per class, a learned mixture, or "
        "the VampPrior (a name in pyro_vae.models.priors.PRIORS)",
        choices=_registry("models.priors", "PRIORS"),
    )
    prior_components: int | None = option(
        None,
        "K of a mixture prior (Gaussians, per class in a conditional model) or of the VampPrior (pseudo-inputs)",
        positive=True,
        maximum=MAX_SIZE,
    )
    kl_weight: float | None = option(
        None,
        "weight w of the KL term of z in the training loss",
        positive=True,
    )
    decoder_y: str | None = option(
        None,
        "the decoder reads y at its input, in every layer, or in every layer and scaling every hidden unit",
        choices=_registry("models.nets", "DECODER_Y"),
    )


@dataclass
class TrainConfig:
    epochs: int | None = option(
        None,
        "total epochs; with --resume, the new total",
        positive=True,
        maximum=MAX_SIZE,
    )
    batch_size: int = option(128, "images per step", positive=True, maximum=MAX_SIZE)
    lr: float = option(1e-3, "Adam learning rate", positive=True)
    seed: int = option(0, "seed of every random number generator", minimum=0, maximum=MAX_SEED)
    device: str = option("auto", "auto (CUDA when available), cpu or cuda", choices=DEVICES)
    kl_warmup_epochs: int = option(
        0, "β rises linearly from 1/N to 1 over N epochs; 0 = off", minimum=0, maximum=MAX_SIZE
    )
    eval_num_samples: int = option(
        1000,
        "K of the importance-sampled log p(x) at the end of training",
        flag="--num-samples",
        positive=True,
        maximum=MAX_SIZE,
    )
    elbo: str | None = option(
        None,
        "ELBO estimator",
        choices=_registry("inference.elbos", "ELBOS"),
    )
    particles: int = option(
        1, "K vectorized particles per datapoint for the estimator", positive=True, maximum=MAX_SIZE
    )
    alpha: float = option(0.5, "α of --elbo renyi")
    jit: bool = option(
        False, "the estimator's JIT variant (trace, meanfield, tracegraph; torch.jit.trace, deprecated: see --compile)"
    )
    compile: bool = option(
        False,
        "torch.compile the encoder, decoder and guide-head networks (Pyro's tracing stays eager); replaces --jit",
    )
    max_seconds: float | None = option(
        None, "time budget in seconds: stop after the epoch that reaches it (default: epochs only)", positive=True
    )
    class_weight: float = option(5.0, "α'; each labelled image's −log q(y|x) weighs α = α'·N/N_labelled", minimum=0)
    class_weight_grid: tuple[float, ...] | None = option(
        None,
        "choose --class-weight among these on a validation split carved from the training images "
        "(a tenth of them, never the test set), one run each; config.json records the choice",
        minimum=0,
        metavar="A",
    )
    fidelity_samples: int = option(
        200,
        "samples per class for the label fidelity at the end (a CNN judge reads them); 0 = skip",
        minimum=0,
        maximum=MAX_SIZE,
    )
    tensorboard: bool = option(False, "also write a TensorBoard log into RUN_DIR/tensorboard/ (the tensorboard extra)")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Option:
    """One config field as the command line sees it."""

    section: str  # data | model | train
    name: str
    type: type  # int, float, str, bool, or tuple
    optional: bool  # None is allowed
    default: object
    meta: dict
    item: type | None = None  # the type of a tuple's items

    @property
    def flag(self) -> str:
        return self.meta.get("flag") or "--" + self.name.replace("_", "-")

    def choices(self) -> list | None:
        """The values allowed, or None for a field checked by a function (or not at all)."""
        c = self.meta.get("choices")
        if c is None or getattr(c, "is_check", False):
            return None
        return list(c() if callable(c) else c)


def options_of(cls: type) -> list[Option]:
    """The :class:`Option` of every field of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    section = next((k for k, v in SECTIONS.items() if v is cls), cls.__name__)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        if "help" not in f.metadata:  # not an option (e.g. a nested config)
            continue
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        item = typing.get_args(base)[0] if typing.get_origin(base) is tuple else None
        base = tuple if item is not None else base
        out.append(Option(section, f.name, base, optional, f.default, dict(f.metadata), item))
    return out


def check_field(opt: Option, value):
    """Check one value against its field's type and range; returns the value in its canonical type.

    :raises ConfigError: naming the field, the value received and what is expected.
    """

    def bad(detail: str):
        return ConfigError(opt.name, f"{detail}, got {value!r}", opt.flag)

    if value is None:
        if opt.optional:
            return None
        raise bad("is required")
    m = opt.meta
    if opt.type is bool:
        if not isinstance(value, bool):
            raise bad("must be true or false")
        return value
    if opt.type is str:
        if not isinstance(value, str):
            raise bad("must be a string")
        check = m.get("choices")
        if getattr(check, "is_check", False):
            try:
                check(value)
            except ValueError as e:  # "unknown NAME 'x'; choose one of a, b" ↦ "must be one of a, b, got 'x'"
                allowed = str(e).partition("; choose one of ")[2]
                raise ConfigError(opt.name, f"must be one of {allowed}, got {value!r}" if allowed else str(e), opt.flag)
        _check_choice(opt, value)
        return value
    if opt.type is tuple:
        n = m.get("length")
        if not isinstance(value, list | tuple) or not value or (n is not None and len(value) != n):
            count = f"{n}" if n is not None else "one or more"
            raise bad(f"must be a list of {count} {'integers' if opt.item is int else 'names'}")
        return tuple(check_field(dataclasses.replace(opt, type=opt.item, optional=False), v) for v in value)
    if opt.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("must be an integer")
    elif opt.type is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("must be a number")
        if not math.isfinite(value):
            raise bad("must be a finite number")
        value = float(value)
    _check_choice(opt, value)
    kind = "an integer" if opt.type is int else "a number"
    if m.get("positive") and not value > 0:
        raise bad(f"must be {'a positive integer' if opt.type is int else 'a positive number'}")
    if m.get("minimum") is not None and value < m["minimum"]:
        raise bad(f"must be {kind} ≥ {m['minimum']:g}")
    if m.get("maximum") is not None and value > m["maximum"]:
        raise bad(f"must be {kind} ≤ {m['maximum']:,}")
    return value


def _check_choice(opt: Option, value) -> None:
    choices = opt.choices()
    if choices is not None and value not in choices:
        raise ConfigError(opt.name, f"must be one of {', '.join(map(str, choices))}, got {value!r}", opt.flag)


def check_options(obj) -> None:
    """Check every option field of a config dataclass instance in place (:func:`check_field`)."""
    for opt in options_of(type(obj)):
        setattr(obj, opt.name, check_field(opt, getattr(obj, opt.name)))


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run_id: str | None = field(default=None, compare=False)  # set by fit, in config.json and every checkpoint

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["run_id"] is None:  # as config.json was before ids
            del d["run_id"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """The config of a ``to_dict`` dict (e.g. ``config.json``), every value checked.

        :raises ConfigError: for an unknown section or field, or a value of the wrong type or range.
        """
        if not isinstance(d, dict):
            raise ConfigError("config", f"must be a JSON object with sections {', '.join(SECTIONS)}, got {d!r:.60}")
        unknown = set(d) - set(SECTIONS) - {"run_id"}
        if unknown:
            raise ConfigError("config", f"has unknown section {sorted(unknown)[0]!r}; sections: {', '.join(SECTIONS)}")
        sections = {}
        for name, cls_ in SECTIONS.items():
            values = d.get(name, {})
            if not isinstance(values, dict):
                raise ConfigError(name, f"must be a JSON object of fields, got {values!r:.60}")
            fields = {o.name: o for o in options_of(cls_)}
            extra = set(values) - set(fields)
            if extra:
                raise ConfigError(
                    name, f"has unknown field {sorted(extra)[0]!r}; fields: {', '.join(fields)}", f"[{name}]"
                )
            sections[name] = cls_(**{k: check_field(fields[k], v) for k, v in values.items()})
        run_id = d.get("run_id")
        if run_id is not None and not (isinstance(run_id, str) and run_id.isalnum() and len(run_id) <= 64):
            raise ConfigError("run_id", f"must be the run's id (letters and digits), got {run_id!r:.60}", "run_id")
        return cls(**sections, run_id=run_id)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """:raises ConfigError: one line naming the file and what is wrong with it."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}", f"cannot be read ({e})", f"{path}") from None
        except ConfigError as e:
            raise ConfigError(f"{path}:", str(e), f"{path}:") from None

    def validate(self) -> None:
        """Check every field (type, finiteness, range, registry names), then the combinations.

        :raises ConfigError: naming the field (:meth:`ConfigError.for_cli`: the flag), the value
            received and what is expected.
        """
        for section in (self.data, self.model, self.train):
            check_options(section)
        if self.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(
                "tensorboard", 'needs the tensorboard package, which is not installed; pip install -e ".[tensorboard]"'
            )
        if self.train.compile and self.train.jit:
            raise ConfigError(
                "compile",
                "replaces --jit and cannot be combined with it (torch.compile and torch.jit.trace on the same "
                "networks); drop --jit",
            )
