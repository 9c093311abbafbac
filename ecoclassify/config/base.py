"""Config base: the strict section class and path resolution shared by every section."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator

def _resolve(value: Optional[Path], info: ValidationInfo) -> Optional[Path]:
    """Make a relative path absolute against the config file's folder (no filesystem access)."""
    if value is None:
        return None
    value = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return Path(os.path.normpath(value))


#: Words YAML 1.1 read as booleans. ecoclassify reads YAML 1.2 (only true/false), so these
#: arrive as strings; a key that takes a boolean still accepts them.
BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def boolean_word(value: Any) -> Any:
    """``True``/``False`` for a boolean word (``yes``, ``No``, ``OFF``...), anything else unchanged."""
    if isinstance(value, str) and value.lower() in BOOLEAN_WORDS:
        return BOOLEAN_WORDS[value.lower()]
    return value


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _explicit_subsections(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, field in cls.model_fields.items():
            # YAML reads `yes` and `true` as booleans, and pydantic would take them as 1.
            if field.annotation in (int, float) and isinstance(data.get(name), bool):
                raise ValueError(f"@{name} must be a number. Received: {data[name]!r}")
            # Omitted sections are validated from {} (not built by default_factory), so they
            # get the validation context too: a default relative path resolves like a written one.
            if (name not in data and not field.is_required() and isinstance(field.annotation, type)
                    and issubclass(field.annotation, Section)):
                data[name] = {}
        return data
