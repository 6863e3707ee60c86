"""Kept importable by its old name: the run-directory format is :mod:`convlens.models.run`."""

from ..models.run import Run, check_out, library_versions, load_run_model, read_config

__all__ = ["Run", "check_out", "library_versions", "load_run_model", "read_config"]
