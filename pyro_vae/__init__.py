"""pyro_vae: variational autoencoders as Pyro model/guide pairs, trained by SVI.

The names below are imported on first use (PEP 562), so that ``import pyro_vae.config`` and the
command's folder lock cost no torch import.
"""

import importlib

_EXPORTS = {
    "config": ["DataConfig", "ModelConfig", "RunConfig", "TrainConfig"],
    "data.builtin": ["DATASETS"],
    "data.images": ["ByteImages", "ImageData", "PIXELS", "check_images", "check_labels"],
    "data.load": ["check_data_config", "check_dataset_name", "load_data", "load_dataset"],
    "errors": [
        "CheckpointError",
        "ConfigError",
        "DataError",
        "GridMismatch",
        "ImageError",
        "IncompatibleEstimator",
        "IncompatiblePair",
        "IncompleteGrid",
        "LabelError",
        "LaunchError",
        "OutOfMemory",
        "PyroVAEError",
        "RegistryError",
        "RunExists",
        "RunInterrupted",
        "RunLocked",
        "TrainingDiverged",
        "UnsafePath",
        "UsageError",
        "WriteError",
    ],
    "experiments.class_weight": ["fit_with_selection", "select_class_weight"],
    "experiments.grid": ["CompareConfig", "collect", "compare", "list_cells", "run_cell_at"],
    "inference.evaluate": ["chunk_for_memory", "elbo_terms", "importance_log_px", "log_weights"],
    "inference.labels": [
        "class_log_likelihoods",
        "conditional_metrics",
        "generative_classify",
        "label_fidelity",
        "label_sensitivity",
    ],
    "models.base": ["BaseVAE", "ConditionalModel"],
    "models.cvae": ["CVAE"],
    "models.likelihoods": ["LIKELIHOODS", "bits_per_dim"],
    "models.nets": ["NETS"],
    "models.registry": ["MODELS", "check_config", "get_model", "register_model"],
    "models.ssvae": ["SSVAE", "labelled_subset", "train_classifier"],
    "models.vae": ["VAE"],
    "training.compiling": ["compile_networks"],
    "training.distributed": ["ELBOLoss"],
    "training.runfolder": ["run_state"],
    "training.train": ["Run", "finish", "fit", "load_run", "resume"],
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
