"""User-facing errors.

Every error a user can cause by bad input (a config, an arch, a data folder, a checkpoint)
is a `CreamError`. The CLI prints its message as one line and exits with code 2; library
callers can catch it like any other exception.
"""

from __future__ import annotations


class CreamError(Exception):
    """Bad input from the user: the message says what is wrong and what is allowed."""


class ConfigError(CreamError, ValueError):
    """An unknown key, a wrong type or an out-of-range value in a config."""


class ArchError(CreamError, ValueError):
    """An architecture that its space does not allow."""


class DataError(CreamError):
    """A missing, empty or unreadable dataset."""


class CheckpointError(CreamError):
    """A checkpoint or weights file that is missing, unreadable or does not fit."""


class TrainingError(CreamError):
    """A training run that cannot go on (for example a non-finite loss)."""
