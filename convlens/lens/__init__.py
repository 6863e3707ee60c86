"""Views inside a model: journeys, CAMs, attributions, feature visualisation, examples.

Every capture goes through :class:`convlens.probe.Probe`; every result is a
:class:`convlens.view.View`.
"""

from .cam import Explanation, explain, predict_explain
from .sanity import Sanity
from .score import Scores

# the verbs score and sanity are ``convlens.score`` / ``convlens.sanity`` (here they would shadow their
# own modules, convlens.lens.score and convlens.lens.sanity)
__all__ = ["Explanation", "Sanity", "Scores", "explain", "predict_explain"]
