"""Models: backbone registry, classification head, in-model preprocessing and freezing."""

from ecoclassify.models.registry import BackboneSpec, get_backbone, list_backbones, register_backbone

__all__ = ["BackboneSpec", "get_backbone", "list_backbones", "register_backbone"]
