"""Training (this package is callable: ``convlens.train(...)`` is :func:`train`): the Fabric fit
loop and evaluation, over the nouns below them (architectures from a spec or a pretrained backbone
in :mod:`convlens.models.arch`, run directories in :mod:`convlens.models.run`, re-exported here
under their old names).

>>> from convlens.train import train, evaluate      # doctest: +SKIP
>>> run = train("digits", epochs=5, out="runs/digits")  # doctest: +SKIP
>>> evaluate("runs/digits").accuracy                 # doctest: +SKIP
"""

from .._modules import make_callable
from ..models.arch import DEFAULT_ARCH, SEED_KERAS_ARCH, build_arch, parse_arch
from ..models.run import Run, load_run_model
from .compare import Comparison, compare
from .evaluate import Evaluation, evaluate, metrics_from_logits
from .fit import TrainOptions, parse_stop_at, train

__all__ = ["DEFAULT_ARCH", "SEED_KERAS_ARCH", "Comparison", "Evaluation", "Run", "TrainOptions", "build_arch",
           "compare", "evaluate", "load_run_model", "metrics_from_logits", "parse_arch", "parse_stop_at", "train"]

# ``convlens.train`` is this package and, called, :func:`train` (see convlens._modules)
make_callable(__name__, train)
