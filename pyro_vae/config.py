"""Typed run configuration, saved as ``config.json`` next to every run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .io import atomic_write_text

MODEL_NAMES = ("vae", "cvae", "ssvae")  # built by pyro_vae.train.MODELS
PRIORS = ("learned", "standard")  # p(z|y) of the cvae


@dataclass
class DataConfig:
    dataset: str = "mnist-5k"  # a name in pyro_vae.data.DATASETS
    data_dir: str | None = None  # folder with the four IDX files (or a torchvision root)
    pixels: str = "continuous"  # continuous | dynamic | static (see pyro_vae.data.PIXELS)
    labels: int | None = None  # model="ssvae": keep N training labels, balanced per class (None: all)
    image_size: tuple[int, int] | None = None  # folder, torchvision:NAME: resize every image to H W (None: as read)
    channels: int | None = None  # folder, torchvision:NAME: 1 (grey) or 3 (RGB) (None: grey unless any is colour)
    test_fraction: float = 0.1  # folder, array, torchvision:NAME without a test split: share held out (seeded)
    layout: str | None = None  # array: nhwc | nchw when the shape leaves it ambiguous (None: from the shape)


@dataclass
class ModelConfig:
    z_dim: int = 20  # latent dimension
    hidden_dims: tuple[int, ...] = (400,)  # MLP widths, encoder order; the decoder mirrors them
    likelihood: str = "bernoulli"  # a name in pyro_vae.likelihoods.LIKELIHOODS
    guide: str = "diag"  # a name in pyro_vae.guides.GUIDES
    flow_steps: int = 2  # K inverse autoregressive flow steps, for guide="iaf"
    model: str = "vae"  # vae | cvae | ssvae (see pyro_vae.train.MODELS)
    net: str = "mlp"  # a name in pyro_vae.nets.NETS: mlp | conv
    prior: str | None = None  # model="cvae": p(z|y) learned | standard (None: learned); others use N(0, I)


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3  # Adam learning rate
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    kl_warmup_epochs: int = 0  # β rises linearly from 1/N to 1 over N epochs; 0 = off
    eval_num_samples: int = 1000  # K of the importance-sampled log p(x) at the end of training
    elbo: str = "trace"  # a name in pyro_vae.elbos.ELBOS
    particles: int = 1  # K vectorized particles per datapoint for the estimator
    alpha: float = 0.5  # α of elbo="renyi"
    jit: bool = False  # the estimator's JIT variant (trace, meanfield, tracegraph)
    max_seconds: float | None = None  # time budget: stop after the epoch that reaches it (None: epochs only)
    class_weight: float = 1.0  # model="ssvae": α; each labelled image's −log q(y|x) weighs α·N/N_labelled


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        model = dict(d.get("model", {}))
        if "hidden_dims" in model:
            model["hidden_dims"] = tuple(model["hidden_dims"])
        return cls(
            data=DataConfig(**d.get("data", {})),
            model=ModelConfig(**model),
            train=TrainConfig(**d.get("train", {})),
        )

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"cannot read run config {path}: {e}") from None

    def validate(self) -> None:
        """Check the numeric fields; names are checked by the registries that use them.

        :raises ValueError: naming the field, the value received and what is expected.
        """
        positive = {
            "z_dim": self.model.z_dim,
            "epochs": self.train.epochs,
            "batch_size": self.train.batch_size,
            "eval_num_samples": self.train.eval_num_samples,
            "flow_steps": self.model.flow_steps,
            "particles": self.train.particles,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.model.hidden_dims or any(h < 1 for h in self.model.hidden_dims):
            raise ValueError(f"hidden_dims must be one or more positive widths, got {self.model.hidden_dims!r}")
        if not self.train.lr > 0:
            raise ValueError(f"lr must be positive, got {self.train.lr!r}")
        if self.train.max_seconds is not None and not self.train.max_seconds > 0:
            raise ValueError(
                f"max_seconds must be positive (or None for no time budget), got {self.train.max_seconds!r}"
            )
        m = self.model
        if m.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {m.model!r}; choose one of {', '.join(MODEL_NAMES)}")
        if m.prior is not None and m.model != "cvae":
            raise ValueError(
                f"prior applies to model 'cvae' only (a learned or standard p(z|y)), got prior={m.prior!r} "
                f"with model {m.model!r}; drop --prior or use --model cvae"
            )
        if m.prior not in (None, *PRIORS):
            raise ValueError(f"unknown prior {m.prior!r}; choose one of {', '.join(PRIORS)}")
        if self.data.labels is not None:
            if m.model != "ssvae":
                raise ValueError(
                    f"labels applies to model 'ssvae' only (semi-supervised), got labels={self.data.labels!r} "
                    f"with model {m.model!r}; drop --labels or use --model ssvae"
                )
            if not isinstance(self.data.labels, int) or self.data.labels < 1:
                raise ValueError(f"labels must be a positive integer, got {self.data.labels!r}")
        if not self.train.class_weight >= 0:
            raise ValueError(f"class_weight must be 0 or positive, got {self.train.class_weight!r}")
        if self.train.kl_warmup_epochs < 0:
            raise ValueError(f"kl_warmup_epochs must be 0 (off) or positive, got {self.train.kl_warmup_epochs!r}")
