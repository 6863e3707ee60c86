"""Moved to :mod:`convlens.probe` (the one hook owner, on the ground floor); kept importable."""

from ..probe import Probe, StopForward, first_tensor, resolve_modules

__all__ = ["Probe", "StopForward", "first_tensor", "resolve_modules"]
