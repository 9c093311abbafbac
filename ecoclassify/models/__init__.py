"""Models: backbone builders by name, the end-to-end classifier, freezing, saving and loading.

Importing this package registers the built-in backbone builders (no TensorFlow import: builders
import Keras when called). Each backbone's facts live in :mod:`ecoclassify.config.backbones`.
"""

from ecoclassify.models import backbones, efficientnet_lite  # noqa: F401  (register the builders)
from ecoclassify.models.registry import build_backbone, register_backbone, registered_builders

__all__ = ["build_backbone", "register_backbone", "registered_builders"]
