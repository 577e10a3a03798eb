"""pyro_vae: variational autoencoders as Pyro model/guide pairs, trained by SVI."""

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .cvae import CVAE, class_log_likelihoods, generative_classify
from .data import DATASETS, PIXELS, DataError, ImageData, check_images, check_labels, labelled_subset, load_dataset
from .evaluate import elbo_terms, importance_log_px, log_weights
from .likelihoods import LIKELIHOODS, bits_per_dim
from .nets import NETS
from .ssvae import SSVAE, train_classifier
from .train import MODELS, Run, TrainingDiverged, finish, fit, load_run, resume
from .vae import VAE

__all__ = [
    "CVAE",
    "DATASETS",
    "LIKELIHOODS",
    "MODELS",
    "NETS",
    "PIXELS",
    "SSVAE",
    "VAE",
    "DataConfig",
    "DataError",
    "ImageData",
    "ModelConfig",
    "Run",
    "RunConfig",
    "TrainConfig",
    "TrainingDiverged",
    "bits_per_dim",
    "check_images",
    "check_labels",
    "class_log_likelihoods",
    "elbo_terms",
    "finish",
    "fit",
    "generative_classify",
    "importance_log_px",
    "labelled_subset",
    "load_dataset",
    "load_run",
    "log_weights",
    "resume",
    "train_classifier",
]
__version__ = "0.1.0"
