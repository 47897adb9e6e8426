"""Errors the library raises on purpose; each message says what is wrong and what to do.

This module imports nothing heavy (no torch), so callers such as the Slicer module can use
these classes before the library's dependencies are installed.
"""

from __future__ import annotations

__all__ = ["GuideNote", "InferenceCancelled", "InferenceError", "InputError", "InputNote", "LIBRARY_ERRORS",
           "ModelNotShipped", "Terminated", "WeightsError"]


class InputError(ValueError):
    """An input image, volume, path or option that cannot be processed as given."""


class WeightsError(ValueError):
    """Weights that are missing, corrupt, tampered with or do not fit the network."""


class ModelNotShipped(WeightsError):
    """No shipped model fits the request (variant, scale, T1, role): the installation lacks one, none is damaged."""


class InferenceCancelled(RuntimeError):
    """The caller asked to stop; nothing was written."""


class InferenceError(RuntimeError):
    """The network could not give a usable result (e.g. NaN / Inf voxels); nothing was returned or written."""


class Terminated(Exception):
    """A signal asked the process to stop (the command line turns SIGTERM / SIGHUP into this): unwinds like an
    error, so that temporary files are removed and a training run writes its checkpoint on the way out; `status`
    is the exit status to end with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class InputNote(UserWarning):
    """Something the library decided for the caller and says in one line (e.g. the acquisition axis it picked)."""


class GuideNote(InputNote):
    """What the guide check measured and which model ran because of it, in one line (inference/guide_check.py)."""


LIBRARY_ERRORS = (InputError, WeightsError, InferenceError, InferenceCancelled)
