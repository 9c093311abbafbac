"""Turn pydantic validation errors into ConfigError messages that name the key path.

Every message has the Keras shape users learn to read quickly:
``data.split.method must be one of: group, predefined, stratified. Received: 'stratify'``.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, NoReturn, get_args

from pydantic import BaseModel, ValidationError

from ecoclassify.errors import ConfigError


def key_path(loc: tuple[Any, ...]) -> str:
    """``('training', 'stages', 0, 'epochs')`` -> ``training.stages[0].epochs``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "config"


def _section_model(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class found by following ``loc`` through the schema."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = _first_model(model.model_fields[part].annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _first_model(annotation: Any) -> Any:
    """The BaseModel inside ``Optional[X]``, ``list[X]`` or ``X``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _message(error: dict[str, Any], root: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    received = error.get("input")
    # Union members appear in loc as e.g. 'literal['none','all']'; they only add noise.
    loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    path = key_path(loc)
    if kind == "extra_forbidden":
        parent = _section_model(root, loc[:-1])
        valid = sorted(parent.model_fields) if parent is not None else []
        where = key_path(loc[:-1]) if loc[:-1] else "the top level"
        message = f"{path} is not a valid key in {where}. Valid keys: {', '.join(valid)}. Received: {loc[-1]!r}"
        close = difflib.get_close_matches(str(loc[-1]), valid, n=2)
        if close:
            message += f" (did you mean {' or '.join(repr(c) for c in close)}?)"
        return message
    if kind == "missing":
        return f"{path} is required"
    if kind in ("literal_error", "enum"):
        allowed = sorted(re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", ""))))
        return unknown_choice_message(path, allowed, received)
    text = str(error.get("msg", ""))
    if kind == "value_error":
        text = text.removeprefix("Value error, ")
        if text.startswith("@"):  # a model validator naming the key it is about: "@labels is required"
            key, _, text = text[1:].partition(" ")
            return f"{key_path(loc + (key,))} {text}"
        if not loc:
            return text
        return f"{path} {text}" if text.startswith("must") else f"{path}: {text}"
    text = text.replace("Input should be", "must be").replace("Input should have", "must have")
    text = text.replace("Input should", "must").replace("String should", "must")
    if "Received:" not in text:
        text += f". Received: {received!r}"
    return f"{path} {text}"


def raise_config_error(exc: Exception, root: type[BaseModel]) -> NoReturn:
    """Re-raise a pydantic ``ValidationError`` as one ``ConfigError`` listing every problem."""
    if not isinstance(exc, ValidationError):
        raise exc
    messages = []
    for error in exc.errors(include_url=False):
        message = _message(error, root)
        if message not in messages:
            messages.append(message)
    if len(messages) == 1:
        raise ConfigError(messages[0]) from None
    raise ConfigError("invalid config:\n" + "\n".join(f"  - {m}" for m in messages)) from None


def unknown_choice_message(key: str, allowed: list[str], received: object) -> str:
    """Format the standard 'must be one of ... Received: ...' message with close matches."""
    message = f"{key} must be one of: {', '.join(allowed)}. Received: {received!r}"
    close = difflib.get_close_matches(str(received), allowed, n=3)
    if close:
        message += f" (did you mean {' or '.join(repr(c) for c in close)}?)"
    return message
