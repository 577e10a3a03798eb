"""pyro_vae: variational autoencoders as Pyro model/guide pairs, trained by SVI.

The names below are imported on first use (PEP 562), so that ``import pyro_vae.config`` and the
command's folder lock cost no torch import.
"""

import importlib

_EXPORTS = {
    "compiling": ["compile_networks"],
    "config": ["ConfigError", "DataConfig", "ModelConfig", "RunConfig", "TrainConfig"],
    "cvae": ["CVAE"],
    "data": [
        "ByteImages",
        "DATASETS",
        "PIXELS",
        "DataError",
        "ImageData",
        "check_images",
        "check_labels",
        "check_data_config",
        "check_dataset_name",
        "labelled_subset",
        "load_data",
        "load_dataset",
    ],
    "distributed": ["ELBOLoss", "LaunchError"],
    "evaluate": [
        "chunk_for_memory",
        "class_log_likelihoods",
        "conditional_metrics",
        "elbo_terms",
        "generative_classify",
        "importance_log_px",
        "label_fidelity",
        "label_sensitivity",
        "log_weights",
    ],
    "grid": ["collect", "list_cells", "run_cell_at"],
    "likelihoods": ["LIKELIHOODS", "bits_per_dim"],
    "models": ["MODELS", "get_model", "register_model"],
    "nets": ["NETS"],
    "runfolder": ["RunLocked", "run_state"],
    "ssvae": ["SSVAE", "train_classifier"],
    "train": [
        "Run",
        "RunExists",
        "RunInterrupted",
        "TrainingDiverged",
        "finish",
        "fit",
        "load_run",
        "resume",
    ],
    "vae": ["VAE", "BaseVAE", "ConditionalModel", "LabelError"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'pyro_vae' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
