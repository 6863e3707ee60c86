"""Training: architectures from a one-line spec or a pretrained backbone, the Fabric
fit loop, run directories and evaluation.

>>> from convlens.train import train, evaluate      # doctest: +SKIP
>>> run = train("digits", epochs=5, out="runs/digits")  # doctest: +SKIP
>>> evaluate("runs/digits").accuracy                 # doctest: +SKIP
"""

from .arch import DEFAULT_ARCH, SEED_KERAS_ARCH, build_arch, parse_arch
from .evaluate import Evaluation, evaluate, metrics_from_logits
from .fit import TrainOptions, parse_stop_at, train
from .run import Run, load_run_model

__all__ = ["DEFAULT_ARCH", "SEED_KERAS_ARCH", "Evaluation", "Run", "TrainOptions", "build_arch", "evaluate",
           "load_run_model", "metrics_from_logits", "parse_arch", "parse_stop_at", "train"]
