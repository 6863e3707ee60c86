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

import json

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

EXAMPLES = 12  # per operation: about 20 operations, the whole file in well under a minute here


@pytest.fixture(scope="module")
def api_schema():
    from convlens.models.run import Run
    from convlens.web import create_app
    from web_support import runs_root

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


# -- values at and past the bounds --------------------------------------------------------------
#
# The generator above draws schema-shaped values and rarely the extremes; it missed the kernels
# lab's float32 overflow.  Here every numeric field of every operation (query, form and JSON body,
# read from the same OpenAPI schema) gets each hostile value below, the other fields valid, and
# every string field that holds a number gets hostile numeric text: no answer may be a 5xx.

HUGE = [0, -1, 1, 2 ** 31, 2 ** 63, 10 ** 30, 1e39, 1e308, -1e308, 1e-308, 1.5, "NaN", "inf", "-inf",
        "1e39", "99999999999999999999", ""]
NUMERIC_TEXT = {  # string fields that a verb reads as numbers
    "target": ["-1", "1e39", "1e308", "99999999999999999999", "nan", "inf"],
    "channels": ["0-99999999999", "-5--1", "99999999999999999999", "1e39", "0-7,inf"],
    "padding": ["20000", "1024", "-1", "1e39", "nan", "99999999999999999999"],
    "kernel": ["1e39", "1e308,0;0,0", "nan,1;1,1", "inf", "3e38,3e38,3e38;3e38,3e38,3e38;3e38,3e38,3e38",
               "-1e308", ";".join([",".join(["1"] * 64)] * 64)],
}


def _numbers(schema: dict) -> list:
    """Values at and past the bounds of an integer/number schema: its bounds, one past, the HUGE set."""
    for alt in schema.get("anyOf", [schema]):
        if alt.get("type") in ("integer", "number"):
            out = list(HUGE)
            for key, step in (("minimum", -1), ("maximum", 1)):
                if key in alt:
                    out += [alt[key], alt[key] + step]
            return out
    return []


def _bodies(spec: dict, op: dict) -> tuple[str | None, dict]:
    """(content type, the properties of the request body's schema) of an operation."""
    content = (op.get("requestBody") or {}).get("content") or {}
    for ctype, media in content.items():
        ref = media["schema"].get("$ref", "")
        schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else media["schema"]
        return ctype, schema.get("properties", {})
    return None, {}


def test_numbers_at_and_past_every_bound_never_answer_5xx():
    from convlens.models.run import Run
    from convlens.web import create_app
    from web_support import local_client, runs_root

    model = Run.load(runs_root() / "digits-tiny").model()
    app = create_app(models=[model], runs_dir=runs_root(), max_upload=256 * 1024)
    failures = []
    with local_client(app, raise_server_exceptions=False) as c:
        spec = c.get("/openapi.json").json()
        layer = c.get("/api/layers").json()["default_cam_layer"]
        valid = {"image": "sample:chelsea", "image_id": "sample:chelsea", "run_id": "digits-tiny",
                 "audit_id": "none", "layer": layer, "run": ["digits-tiny", "digits-tiny"]}
        tried = 0
        for path, ops in spec["paths"].items():
            for method, op in ops.items():
                params = op.get("parameters", [])
                base_q = {p["name"]: valid[p["name"]] for p in params if p["name"] in valid and p["in"] == "query"}
                url = path
                for p in params:
                    if p["in"] == "path":
                        url = url.replace("{" + p["name"] + "}", valid.get(p["name"], "x"))
                ctype, props = _bodies(spec, op)
                fields: list[tuple[str, str, list]] = [("query", p["name"], _numbers(p["schema"]) or
                                                        NUMERIC_TEXT.get(p["name"], [])) for p in params
                                                       if p["in"] == "query"]
                fields += [("body", name, _numbers(s) or NUMERIC_TEXT.get(name, [])) for name, s in props.items()]
                for where, name, values in fields:
                    for value in values:
                        query, body = dict(base_q), {}
                        if where == "query":
                            query[name] = value
                        else:
                            body[name] = value
                        if ctype == "application/json":
                            r = c.request(method, url, params=query, content=json.dumps(body),
                                          headers={"content-type": "application/json"})
                        elif ctype:  # multipart: the fields as text, an image by id
                            form = {"image": "sample:chelsea", **{k: str(v) for k, v in body.items()}}
                            r = c.request(method, url, params=query, data=form, files={"o": ("a", b"b")})
                        else:
                            r = c.request(method, url, params=query)
                        tried += 1
                        what = (f"{method.upper()} {url} {where} {name}={str(value)[:40]!r} -> "
                                f"{r.status_code}: {r.text[:200]}")
                        if r.status_code >= 500 or (r.status_code >= 400 and not isinstance(
                                r.json().get("error"), str)):
                            failures.append(what)
    assert tried > 150  # every numeric field of the API was pushed past its bounds
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("body", [
    {"padding": "20000"},
    {"kernel": "1e39,0,0;0,1,0;0,0,1"},
    {"kernel": "1e308,0,0;0,1,0;0,0,1"},
    {"kernel": "3e38,3e38,3e38;3e38,3e38,3e38;3e38,3e38,3e38", "repeat": 2},
    {"padding": "same", "repeat": 400},
])
def test_kernels_lab_hostile_numbers_answer_4xx(body):
    """The cases of issue 27 (a 34 s, 5.9 GB request; an overflow IndexError; a 500): one 4xx JSON
    line each, computed from the declared bounds before any allocation."""
    from convlens.models.run import Run
    from convlens.web import create_app
    from web_support import local_client, runs_root

    app = create_app(models=[Run.load(runs_root() / "digits-tiny").model()])
    with local_client(app) as c:
        r = c.post("/api/kernels", json={"image": "sample:chelsea", "size": 64, **body})
    assert 400 <= r.status_code < 500, r.text
    assert "\n" not in r.json()["error"]


def test_score_with_one_step_is_not_a_server_error():
    """``/api/score?steps=1`` (the documented minimum) answered 500: now it answers."""
    from convlens.models.run import Run
    from convlens.web import create_app
    from web_support import local_client, runs_root

    app = create_app(models=[Run.load(runs_root() / "digits-tiny").model()])
    with local_client(app) as c:
        r = c.get("/api/score", params={"image": "sample:chelsea", "steps": 1})
    assert r.status_code < 500, r.text
    assert r.status_code == 200 or "error" in r.json()
