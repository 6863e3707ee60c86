"""The method registry as the CAM package reads it: :mod:`convlens.methods` (plain data on the
ground floor, so the CLI's help reads it without importing torch)."""

from ...methods import ALIASES, METHODS, Method, family, help_line

__all__ = ["ALIASES", "METHODS", "Method", "family", "help_line"]
