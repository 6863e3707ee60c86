"""The explorer's JSON API fuzzed from its own OpenAPI schema (schemathesis on hypothesis).

Every operation gets a bounded number of generated requests (random ids, strings, numbers at
and past their bounds, random multipart bodies): none may answer 5xx, and every 4xx must be
the app's JSON ``{"error": ...}``, never a bare HTML page or FastAPI's default ``{"detail": ...}``.

The app serves a tiny CNN trained on digits (and the run it came from): the fuzzer's largest
legal requests (featurevis with 512 steps at 512 px, a journey of 512 channels) then take
milliseconds instead of minutes on the built-in 224 px model, so the bound is the number of
examples, not the machine.  The built-in model's routes are covered by tests/test_web_api.py.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

EXAMPLES = 12  # per operation: about 20 operations, the whole file in well under a minute here


@pytest.fixture(scope="module")
def api_schema():
    from web_support import runs_root

    from convlens.models.run import Run
    from convlens.web import create_app

    model = Run.load(runs_root() / "digits-tiny").model()
    app = create_app(models=[model], runs_dir=runs_root(), max_upload=256 * 1024,
                     allow_hosts=["testserver"])  # the host schemathesis's ASGI client sends
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _check(case) -> None:
    response = case.call()
    code = response.status_code
    what = (f"{case.method} {case.formatted_path} query={case.query!r} body={str(case.body)[:80]!r} "
            f"-> {code}: {response.content[:300]!r}")
    assert code < 500, what
    if code >= 400:
        ctype = {k.lower(): v for k, v in response.headers.items()}.get("content-type", "")
        ctype = ctype[0] if isinstance(ctype, list) else ctype  # schemathesis keeps header values as lists
        assert ctype.startswith("application/json"), what
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], what
        assert "\n" not in body["error"] and "Traceback" not in body["error"], what


# (schemathesis's own pytest plugin, ``schema.parametrize()``, does not run under pytest 9:
# it reads ``request.node._nodeid``; the operations' strategies are driven by hypothesis here.)
KNOWN = {"image": "sample:chelsea", "image_id": "sample:chelsea", "run_id": "digits-tiny"}


@pytest.mark.parametrize("mode", ["positive", "negative", "known-ids"])
def test_no_request_gets_a_server_error_and_every_refusal_is_json(api_schema, mode):
    """``positive``: requests that fit the schema; ``negative``: requests that break it;
    ``known-ids``: valid requests whose image and run ids are real (a sample photo, the run), so
    the generated methods, layers, targets, channels and steps reach the models themselves."""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation.modes import GenerationMode

    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 20  # every route of the explorer's API is in its schema
    unsatisfiable: list[str] = []
    for op in operations:
        if mode == "known-ids":
            query = {p.name: KNOWN[p.name] for p in op.query if p.name in KNOWN}
            path = {p.name: KNOWN[p.name] for p in op.path_parameters if p.name in KNOWN}
            if not (query or path):
                continue
            strategy = op.as_strategy(query=query or None, path_parameters=path or None)
        else:
            strategy = op.as_strategy(generation_mode=GenerationMode(mode))

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def fuzz(case):
            _check(case)

        try:
            fuzz()
        except Unsatisfiable:
            # nothing to make invalid (no parameters, or only free strings such as a run id)
            assert mode == "negative", f"{op.label}: no valid request could be generated"
            unsatisfiable.append(op.label)
    assert len(unsatisfiable) <= len(operations) // 2, unsatisfiable
