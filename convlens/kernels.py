"""``convlens.kernels``: the kernels lab, kept importable by its old name.

The lab is a view and lives in :mod:`convlens.lens.kernels`; this module IS that module
(``import convlens.kernels`` and ``convlens.lens.kernels`` give the same object), so
``convlens.kernels.apply_kernel`` and ``from convlens.kernels import KERNELS`` keep working.
"""

from __future__ import annotations

import sys

from .lens import kernels as _lab

sys.modules[__name__] = _lab
