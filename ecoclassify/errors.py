"""The exceptions ecoclassify raises for problems a user can fix.

The CLI maps each class to an exit code and prints the message as one paragraph
(no traceback unless ``--debug``). Library callers can catch ``EcoclassifyError``.
"""

from __future__ import annotations


class EcoclassifyError(Exception):
    """Base class of every error caused by user input, data or environment."""

    exit_code = 1


class ConfigError(EcoclassifyError, ValueError):
    """The configuration is invalid: names the key path, allowed values and what was received."""

    exit_code = 2


class DataError(EcoclassifyError):
    """The data cannot be used as configured (missing files, too few images, bad labels...)."""

    exit_code = 1


class ModelError(EcoclassifyError):
    """A model cannot be built, loaded or given its weights."""

    exit_code = 1


class RunError(EcoclassifyError):
    """A run folder or output file cannot be created, resumed or overwritten as asked."""

    exit_code = 1
