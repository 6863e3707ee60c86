"""Modules that are also the verb they are named after.

``convlens.train`` is a package and ``convlens.train(...)`` the training verb; ``convlens.report`` is
a module and ``convlens.report(...)`` the report verb. Importing a submodule makes Python bind the
package attribute to the module (``import convlens.train.fit`` sets ``convlens.train``), so a lazy
export of the function under the same name would silently turn into a module the first time any
code imports the package. :func:`make_callable` gives such a module the verb's ``__call__``: both
``convlens.train(...)`` and ``convlens.train.fit`` work, whatever was imported first.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable


def make_callable(module_name: str, verb: Callable[..., Any]) -> None:
    """Make the module ``module_name`` callable as ``verb`` (its doc and signature stay the module's)."""

    class _VerbModule(types.ModuleType):
        __doc__ = sys.modules[module_name].__doc__

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return verb(*args, **kwargs)

    _VerbModule.__name__ = f"VerbModule[{verb.__name__}]"
    sys.modules[module_name].__class__ = _VerbModule
