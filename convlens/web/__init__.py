"""The local web explorer: ``create_app`` builds the FastAPI app that ``convlens serve`` runs.

>>> from convlens.web import create_app                        # doctest: +SKIP
>>> import uvicorn; uvicorn.run(create_app(models=["effnet-lite0"]), host="127.0.0.1", port=8000)
"""

from .app import CSP, create_app

__all__ = ["CSP", "create_app"]
