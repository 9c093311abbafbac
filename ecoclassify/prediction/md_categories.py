"""Which MegaDetector detection category each class of a whole-image classifier stands for.

MegaDetector-format tools (Timelapse, AddaxAI, MegaDetector's own postprocessing) count and
separate images by *detection*: an empty frame has no detection, an animal is category
``"1"``, a person ``"2"``, a vehicle ``"3"``. A whole-image classifier has classes instead,
so each class is mapped to one of ``animal``, ``person``, ``vehicle`` or ``empty``: by
default from its name (``blank``/``empty``/``nothing``... are ``empty``; a name with the word
``human``/``person``/``people`` is ``person``; ``vehicle``/``car``/``truck``... ``vehicle``;
everything else ``animal``), overridable per class (``--md-category CLASS=CATEGORY``).
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ecoclassify.errors import ConfigError

MD_CATEGORIES = ("animal", "person", "vehicle", "empty")
#: MegaDetector's detection category ids; ``empty`` has none (no detection is written).
MD_CATEGORY_IDS = {"animal": "1", "person": "2", "vehicle": "3"}

_EMPTY_NAMES = {"blank", "blanks", "empty", "nothing", "none", "no_animal", "no_animals", "noanimal", "background",
                "false_trigger", "false_triggers", "misfire", "misfires"}
_PERSON_WORDS = {"human", "humans", "person", "persons", "people"}
_VEHICLE_WORDS = {"vehicle", "vehicles", "car", "cars", "truck", "trucks", "motorcycle", "motorcycles",
                  "motorbike", "motorbikes", "bicycle", "bicycles", "bike", "bikes", "atv", "tractor", "tractors"}


def default_md_category(name: str) -> str:
    """The category a class name suggests (``"human_or_vehicle"`` is ``person``: people are checked first)."""
    normalised = re.sub(r"[\s\-]+", "_", name.strip().lower())
    if normalised in _EMPTY_NAMES:
        return "empty"
    words = set(re.split(r"[^a-z0-9]+", normalised))
    if words & _PERSON_WORDS:
        return "person"
    if words & _VEHICLE_WORDS:
        return "vehicle"
    return "animal"


def check_md_category_overrides(overrides: Any) -> dict[str, str]:
    """Validates ``{class: category}`` before any model is loaded; returns a plain dict.

    Raises:
        ConfigError: Not a mapping of names to one of :data:`MD_CATEGORIES`.
    """
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"md_categories must be a mapping of class names to one of: {', '.join(MD_CATEGORIES)}. "
                          f"Received: {overrides!r}")
    for name, category in overrides.items():
        if category not in MD_CATEGORIES:
            raise ConfigError(f"md_categories[{name!r}] must be one of: {', '.join(MD_CATEGORIES)}. "
                              f"Received: {category!r}")
    return {str(name): str(category) for name, category in overrides.items()}


def resolve_md_categories(classes: Iterable[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{class: category}`` for every class of a model: the defaults, then ``overrides``.

    Raises:
        ConfigError: An override names a class the model does not have, or an unknown category.
    """
    classes = list(classes)
    overrides = check_md_category_overrides(overrides)
    unknown = sorted(set(overrides) - set(classes))
    if unknown:
        raise ConfigError(f"md_categories names class(es) the model does not have: {', '.join(unknown)}; the model's "
                          f"classes are: {', '.join(classes)}. Received: {overrides!r}")
    return {name: overrides.get(name, default_md_category(name)) for name in classes}


def parse_md_category_options(values: Iterable[str]) -> dict[str, str]:
    """``("blank=empty", "staff=person")`` from the command line as ``{class: category}``.

    Raises:
        ConfigError: A value is not ``CLASS=CATEGORY`` with a known category, or a class is given twice.
    """
    parsed: dict[str, str] = {}
    for value in values:
        name, sep, category = value.rpartition("=")
        if not sep or not name:
            raise ConfigError(f"--md-category must be CLASS=CATEGORY with CATEGORY one of: {', '.join(MD_CATEGORIES)}. "
                              f"Received: {value!r}")
        if name in parsed:
            raise ConfigError(f"--md-category gives class {name!r} twice. Received: {value!r}")
        if category not in MD_CATEGORIES:
            raise ConfigError(f"--md-category {name}=... must be one of: {', '.join(MD_CATEGORIES)}. "
                              f"Received: {category!r}")
        parsed[name] = category
    return parsed
