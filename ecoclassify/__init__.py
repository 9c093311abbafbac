"""ecoclassify: train and use image classifiers for ecological field images.

The public API mirrors the command line, one function per command::

    import ecoclassify
    config = ecoclassify.load_config("configs/quickstart.yaml")
    prepared = ecoclassify.validate(config)   # data checks, no training
    run = ecoclassify.train(config)           # a new run folder with model and metrics

Importing the package is cheap: TensorFlow is imported only by the functions that need it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Config": "ecoclassify.config",
    "load_config": "ecoclassify.config",
    "init_config": "ecoclassify.config.starter",
    "list_backbones": "ecoclassify.config.backbones",
    "get_backbone": "ecoclassify.config.backbones",
    "prepare_data": "ecoclassify.data.prepare",
    "validate": "ecoclassify.data.validation",
    "train": "ecoclassify.training.session",
    "Run": "ecoclassify.run",
    "write_report": "ecoclassify.report.writer",
    "evaluate": "ecoclassify.evaluation",
    "EvaluationResult": "ecoclassify.evaluation",
    "predict": "ecoclassify.prediction.labelling",
    "PredictOptions": "ecoclassify.prediction.options",
    "sort": "ecoclassify.prediction.sorting",
    "undo_sort": "ecoclassify.prediction.sorting",
    "export_camtrapdp": "ecoclassify.prediction.camtrapdp",
    "benchmark": "ecoclassify.benchmarking",
    "export": "ecoclassify.exporting",
    "crossval": "ecoclassify.crossvalidation",
    "EcoclassifyError": "ecoclassify.errors",
    "ConfigError": "ecoclassify.errors",
    "DataError": "ecoclassify.errors",
    "ModelError": "ecoclassify.errors",
    "RunError": "ecoclassify.errors",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ecoclassify' has no attribute {name!r}")
