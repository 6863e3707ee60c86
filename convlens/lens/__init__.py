"""Views inside a model: probes, journeys, CAMs, attributions, feature visualisation."""
