"""pyro_vae: variational autoencoders as Pyro model/guide pairs, trained by SVI."""

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .data import DATASETS, PIXELS, DataError, ImageData, check_images, load_dataset
from .evaluate import elbo_terms, importance_log_px, log_weights
from .likelihoods import LIKELIHOODS
from .train import Run, TrainingDiverged, finish, fit, load_run, resume
from .vae import VAE

__all__ = [
    "DATASETS",
    "LIKELIHOODS",
    "PIXELS",
    "VAE",
    "DataConfig",
    "DataError",
    "ImageData",
    "ModelConfig",
    "Run",
    "RunConfig",
    "TrainConfig",
    "TrainingDiverged",
    "check_images",
    "elbo_terms",
    "finish",
    "fit",
    "importance_log_px",
    "load_dataset",
    "load_run",
    "log_weights",
    "resume",
]
__version__ = "0.1.0"
