"""Experiment configuration: YAML -> validated, documented pydantic objects.

Precedence is defaults < YAML file < ``--set key.path=value`` overrides. Validation is
pure: no folder is created and no file is read here (the data layer does that), so a
config can be checked anywhere, instantly, before TensorFlow is imported.

One module per group of sections: :mod:`.data` (``experiment``, ``data``), :mod:`.model`
(``model``, ``augmentation``), :mod:`.training` (``training``, ``report``) and
:mod:`.loading` (the whole :class:`Config`, overrides, files). Beside them: :mod:`.backbones`
(the backbones a config can name), :mod:`.yamlio` (safe YAML), :mod:`.errors` (error messages
naming the key), :mod:`.reference` (the generated config reference) and :mod:`.starter`
(``ecoclassify init``).
"""

from ecoclassify.config.base import Section
from ecoclassify.config.data import DataConfig, DemoConfig, ExperimentConfig, SplitConfig
from ecoclassify.config.loading import Config, apply_overrides, default_stages, load_config
from ecoclassify.config.model import AugmentationConfig, CustomCNNConfig, HeadConfig, ModelConfig
from ecoclassify.config.training import (
    LOGGED_METRICS,
    EarlyStoppingConfig,
    FromLayer,
    LastN,
    ReportConfig,
    StageConfig,
    Trainable,
    TrainingConfig,
)

__all__ = [
    "LOGGED_METRICS", "AugmentationConfig", "Config", "CustomCNNConfig", "DataConfig", "DemoConfig",
    "EarlyStoppingConfig", "ExperimentConfig", "FromLayer", "HeadConfig", "LastN", "ModelConfig",
    "ReportConfig", "Section", "SplitConfig", "StageConfig", "Trainable", "TrainingConfig",
    "apply_overrides", "default_stages", "load_config",
]
