"""Conformance with the Open Inference Protocol's OpenAPI file (tests/data/specs/open_inference_rest.yaml).

1. Every path and method in the YAML is called, with its ${MODEL_NAME} and ${MODEL_VERSION} filled
   with every served model and version, and in its version-less form (the spec's optional
   `[/versions/<model_version>]`); each response is validated against the YAML's schemas (or, where
   the YAML gives none, the spec's JSON objects as `service.v2_types`).
2. Errors (unknown model or version, bad bodies) validate against the YAML's error schemas.
3. Generated inputs (hypothesis: bodies from the YAML's `inference_request` schema, near-valid
   tensors, random paths and binary bodies) never produce a 5xx or a non-JSON answer.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import httpx
import jsonschema
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.types.v2 import Datatype, ModelReadyResponse, ServerLiveResponse, ServerReadyResponse
from tests.service import helpers

SPEC_FILE = helpers.REPO_ROOT / "tests" / "data" / "specs" / "open_inference_rest.yaml"
SPEC = yaml.safe_load(SPEC_FILE.read_text())
SCHEMAS = SPEC["components"]["schemas"]
OPERATIONS = [(path, method) for path, item in SPEC["paths"].items() for method in item if method != "parameters"]
# The YAML gives no body schema for these; the spec's markdown defines the objects.
SPEC_OBJECTS = {"get-v2-health-live": ServerLiveResponse, "get-v2-health-ready": ServerReadyResponse,
                "get-v2-models-$-modelName-versions-$-modelVersion-ready": ModelReadyResponse}
ERROR_SCHEMAS = {"get": "metadata_model_error_response", "post": "inference_error_response"}
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def validate(instance: object, schema_name: str) -> None:
    """Validate against a schema of the YAML's components, resolving its $refs within the file."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": SPEC["components"]}
    jsonschema.Draft7Validator(schema).validate(instance)


def ok_schema(operation: dict) -> str | None:
    content = operation["responses"]["200"].get("content", {})
    ref = content.get("application/json", {}).get("schema", {}).get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


@pytest.fixture(scope="module")
def client(server_url):
    """The real server (`python -m service` on the standard repository), over HTTP.

    Redirects are followed: Starlette answers a trailing slash (e.g. a version "0%2F") with a 307
    to the path without it, which is not an error; what it leads to must be JSON like the rest.
    """
    with httpx.Client(base_url=server_url, timeout=10, follow_redirects=True) as c:
        yield c


def served(client) -> list[tuple[str, str | None]]:
    """(model, version) for every served model: each ready version, and None for the version-less form."""
    pairs: list[tuple[str, str | None]] = []
    for model in client.get("/models").json()["models"]:
        versions = [str(v["version"]) for v in model["versions"] if v["status"] == "ready"]
        pairs += [(model["name"], v) for v in [None, *versions]]
    assert len(pairs) == len(helpers.STANDARD) + len({s.name for s in helpers.STANDARD})  # every version + none
    return pairs


def concrete(template: str, name: str, version: str | None) -> str:
    path = template if version is not None else template.replace("/versions/${MODEL_VERSION}", "")
    return path.replace("${MODEL_NAME}", quote(name, safe="")).replace("${MODEL_VERSION}", quote(version or "", safe=""))


def infer_body(client, name: str, version: str | None) -> dict:
    """A valid request for the model, built from its V2 metadata alone, as a generic client would."""
    meta = client.get(concrete("/v2/models/${MODEL_NAME}/versions/${MODEL_VERSION}", name, version)).json()
    inp = meta["inputs"][0]
    shape = [2, *inp["shape"][1:]]
    body = {"id": f"{name}-{version}", "inputs": [{"name": inp["name"], "shape": shape, "datatype": inp["datatype"],
                                                   "data": np.linspace(-1, 1, int(np.prod(shape))).tolist()}]}
    validate(body, "inference_request")
    return body


def test_the_yaml_lists_the_endpoints_we_serve():
    assert sorted(OPERATIONS) == sorted([
        ("/v2/health/live", "get"), ("/v2/health/ready", "get"), ("/v2/", "get"),
        ("/v2/models/${MODEL_NAME}/versions/${MODEL_VERSION}/ready", "get"),
        ("/v2/models/${MODEL_NAME}/versions/${MODEL_VERSION}", "get"),
        ("/v2/models/${MODEL_NAME}/versions/${MODEL_VERSION}/infer", "post")])


@pytest.mark.parametrize("template, method", OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
def test_every_spec_path_answers_per_its_schema(client, template, method):
    operation = SPEC["paths"][template][method]
    calls = served(client) if "${MODEL_NAME}" in template else [("", "")]
    for name, version in calls:
        path = concrete(template, name, version)
        body = infer_body(client, name, version) if method == "post" else None
        response = client.request(method, path, json=body)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        if ok_schema(operation):
            validate(response.json(), ok_schema(operation))
        else:
            SPEC_OBJECTS[operation["operationId"]].model_validate(response.json())
        if method == "post":
            assert response.json()["id"] == body["id"] and response.json()["model_name"] == name


@pytest.mark.parametrize("template, method", [op for op in OPERATIONS if "${MODEL_NAME}" in op[0]])
@pytest.mark.parametrize("name, version, status", [("nope", "1", 404), ("tiny-binary", "2", 404),
                                                   ("tiny-binary", "one", 404), ("nope", None, 404)])
def test_lookup_errors_per_the_error_schemas(client, template, method, name, version, status):
    response = client.request(method, concrete(template, name, version), json={"inputs": []})
    assert response.status_code == status
    validate(response.json(), ERROR_SCHEMAS[method])


@pytest.mark.parametrize("body", [{}, {"inputs": "x"}, {"inputs": [{"name": "x"}]},
                                  {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [[[0]]]}]},
                                  {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0]}],
                                   "outputs": [{"name": "nope"}]}])
def test_bad_bodies_per_the_error_schema(client, body):
    response = client.post("/v2/models/tiny-binary/infer", json=body)
    assert response.status_code == 400
    validate(response.json(), "inference_error_response")


# --- generated inputs: never a 5xx -------------------------------------------------------------

def _inline(schema: object, depth: int = 0) -> object:
    """The YAML schema with $refs inlined; recursive tensor_data stops after three levels."""
    if isinstance(schema, list):
        return [_inline(s, depth) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name == "tensor_data" and depth >= 3:
            return {"type": "array", "items": {"type": "number"}}
        return _inline(SCHEMAS[name], depth + (name == "tensor_data"))
    return {k: _inline(v, depth) for k, v in schema.items() if not k.startswith("x-") and k != "title"}


def assert_clean(response, success_schema: str | None = "inference_response") -> None:
    assert response.status_code < 500, response.text
    if response.headers["content-type"] == "application/octet-stream":
        n = int(response.headers["inference-header-content-length"])
        header = json.loads(response.content[:n])
        binary = [o for o in header["outputs"] if "binary_data_size" in o.get("parameters", {})]
        assert binary and sum(o["parameters"]["binary_data_size"] for o in binary) == len(response.content) - n
        assert not any("data" in o for o in binary)
        # The binary tensor extension sends those outputs' data after the JSON head, not in "data".
        validate({**header, "outputs": [{**o, "data": []} if o in binary else o for o in header["outputs"]]},
                 "inference_response")
        return
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if response.status_code == 200 and success_schema:
        validate(body, success_schema)
    elif response.status_code != 200:
        validate(body, "inference_error_response")


def from_schema(schema: dict) -> st.SearchStrategy:
    """Values valid under one of the YAML's (inlined) schemas, plus the occasional unknown field.

    Covers what the YAML uses: object/properties/required, array/items, anyOf and the scalar types.
    (hypothesis-jsonschema would do this, but its 0.23 breaks on current hypothesis internals.)
    """
    if "anyOf" in schema:
        return st.one_of([from_schema(s) for s in schema["anyOf"]])
    kind = schema.get("type", "object")
    if kind == "object":
        props = {k: from_schema(v) for k, v in schema.get("properties", {}).items()}
        required = set(schema.get("required", []))
        extra = st.dictionaries(st.text(max_size=3), st.integers(), max_size=1) if props else \
            st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=3), st.integers(), st.booleans()), max_size=3)
        fixed = st.fixed_dictionaries({k: v for k, v in props.items() if k in required},
                                      optional={k: v for k, v in props.items() if k not in required})
        return st.builds(lambda a, b: {**b, **a}, fixed, extra)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {"type": "number"})), max_size=5)
    return {"string": st.text(max_size=6), "integer": st.integers(-(2**65), 2**65),
            "number": st.one_of(st.integers(-(2**65), 2**65), st.floats(allow_nan=False, allow_infinity=False)),
            "boolean": st.booleans()}[kind]


@FUZZ
@given(body=from_schema(_inline(SCHEMAS["inference_request"])))
def test_generated_spec_requests(client, body):
    assert_clean(client.post("/v2/models/tiny-binary/versions/1/infer", content=json.dumps(body)))


scalars = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.booleans(), st.none(),
                    st.text(max_size=3))
numbers = st.one_of(st.integers(-300, 300), st.integers(-(2**65), 2**65), st.floats(-1e40, 1e40))
def test_an_answer_in_binary_tensors_checks_as_the_extension_defines_it(client):
    """Outputs asked for in binary carry binary_data_size and no data; the rest of the head is
    the spec's inference response (what the near-valid fuzz below may also ask for)."""
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0]}],
            "parameters": {"binary_data_output": True}}
    response = client.post("/v2/models/tiny-binary/infer", json=body)
    assert response.headers["content-type"] == "application/octet-stream"
    assert_clean(response)


MODELS = {"tiny-binary": ("x", 3), "tiny-regression": ("x", 2), "tiny-multilabel": ("x", 2), "tiny-features": ("features", 3),
          "half-plus-two": ("x", 1), "nonfinite-multiclass": ("x", 2)}


@st.composite
def near_valid(draw, model: str) -> dict:
    """Requests that are often valid for `model` and otherwise wrong in one or two places."""
    name, n = MODELS[model]
    shape = draw(st.one_of(st.tuples(st.integers(0, 4), st.just(n)).map(list),
                           st.lists(st.integers(0, 6), max_size=3)))
    count = max(0, min(int(np.prod(shape)) if shape else 1, 24))
    data = draw(st.one_of(st.lists(numbers, min_size=count, max_size=count),
                          st.lists(st.lists(numbers, min_size=n, max_size=n), min_size=shape[0] if shape else 0,
                                   max_size=shape[0] if shape else 0),
                          st.lists(scalars, max_size=6), scalars))
    tensor = {"name": draw(st.sampled_from([name, name, name, "", "other"])), "shape": shape,
              "datatype": draw(st.sampled_from(["FP32", "FP32", *(d.value for d in Datatype)])), "data": data}
    if draw(st.booleans()):
        tensor["parameters"] = draw(st.dictionaries(st.sampled_from(["binary_data_size", "shared_memory_region", "z"]),
                                                    st.one_of(st.integers(-2, 40), st.booleans(), st.text(max_size=2))))
    body = {"inputs": draw(st.sampled_from([[tensor], [tensor], [], [tensor, tensor]]))}
    body |= draw(st.fixed_dictionaries({}, optional={
        "id": st.text(max_size=4),
        "outputs": st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from(["logits", "probabilities", "labels", "values", "nope"])},
            optional={"parameters": st.dictionaries(st.sampled_from(["binary_data", "classification"]),
                                                    st.one_of(st.booleans(), st.integers(0, 3)))}), max_size=4),
        "parameters": st.dictionaries(st.sampled_from(["binary_data_output", "priority"]),
                                      st.one_of(st.booleans(), st.integers(0, 3), st.text(max_size=2)))}))
    return body


@FUZZ
@given(model_body=st.sampled_from(sorted(MODELS)).flatmap(lambda m: st.tuples(st.just(m), near_valid(m))))
def test_near_valid_requests(client, model_body):
    model, body = model_body
    assert_clean(client.post(f"/v2/models/{model}/infer", content=json.dumps(body)))


@FUZZ
@given(head=st.binary(max_size=64) | near_valid("tiny-regression").map(lambda b: json.dumps(b).encode()),
       tail=st.binary(max_size=40),
       declared=st.one_of(st.none(), st.integers(-5, 200).map(str), st.text("0123456789 -+xe.", max_size=4)),
       encoding=st.sampled_from([None, "gzip", "deflate", "identity", "x"]))
def test_binary_bodies(client, head, tail, declared, encoding):
    headers = {k: v.strip() for k, v in {"Inference-Header-Content-Length": declared, "Content-Encoding": encoding}.items()
               if v is not None}
    assert_clean(client.post("/v2/models/tiny-regression/infer", content=head + tail, headers=headers))


@FUZZ
@given(name=st.text(min_size=1, max_size=12), version=st.one_of(st.none(), st.text(min_size=1, max_size=6)),
       template=st.sampled_from([t for t, _ in OPERATIONS if "${MODEL_NAME}" in t and not t.endswith("/infer")]))
def test_generated_path_parameters(client, name, version, template):
    response = client.get(concrete(template, name, version))
    success = ok_schema(SPEC["paths"][template]["get"])
    assert response.status_code < 500 and response.headers["content-type"] == "application/json"
    if response.status_code == 200 and success:
        validate(response.json(), success)
    elif response.status_code != 200:
        validate(response.json(), "metadata_model_error_response")


@FUZZ
@given(body=st.dictionaries(st.sampled_from(["instances", "inputs", "signature_name", "x"]),
                            st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                                         | st.dictionaries(st.sampled_from(["features", "x", "a"]), inner, max_size=2),
                                         max_leaves=12)),
       path=st.sampled_from(["/v1/models/tiny-features:predict", "/v1/models/half-plus-two/versions/1:predict",
                             "/v1/models/tiny-binary:predict"]))
def test_generated_tfserving_requests(client, body, path):
    response = client.post(path, content=json.dumps(body))
    assert response.status_code < 500 and response.headers["content-type"] == "application/json"
    assert re.fullmatch(r"\{\"(predictions|outputs|error)\":.*\}", response.text, re.S)
