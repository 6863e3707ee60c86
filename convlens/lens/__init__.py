"""Views inside a model: journeys, CAMs, attributions, feature visualisation, examples.

Every capture goes through :class:`convlens.probe.Probe`; every result is a
:class:`convlens.view.View`.
"""

from .cam import Explanation, explain, predict_explain

__all__ = ["Explanation", "explain", "predict_explain"]
