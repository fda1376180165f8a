"""TensorFlow Serving REST wire format <-> the shared float32 matrix and the served output.

The model's one signature is "serving_default"; its input is the graph input (name from the
card, e.g. "features"), [-1, n_features] DT_FLOAT. Its one output is what a TF Serving client of
a Keras classifier expects: "probabilities" for classifiers (softmax or sigmoid, as the V2
"probabilities" output), the raw output (e.g. "values") for regression. With one output TF
Serving omits its name, so answers are {"predictions": [[...], ...]} (row format) or
{"outputs": [[...], ...]} (columnar), one list per row.

Accepted inputs, as in TF Serving's REST guide, for a model with n features:
- row format: {"instances": [[n numbers], ...]} or {"instances": [{"<input>": [n numbers]}, ...]};
- columnar: {"inputs": [[n numbers], ...]} or {"inputs": {"<input>": [[n numbers], ...]}};
- a model with one feature also takes one number per row: {"instances": [1.0, 2.0, 5.0]};
- "signature_name", when given, must be "serving_default" or "" (TF Serving's default too; model
  metadata lists it as "").
A version in the path is TF Serving's number: `01` is version 1.
Rows then follow the native rules of `codecs.json.rows` (count, width, numbers only, finite float32).

A table model (a card with `columns`) takes its graph's inputs by name (`service.codecs.columns`):
{"instances": [{"features": [numbers or null], "categories": [strings or null]}, ...]} or
{"inputs": {"features": [[...], ...], "categories": [[...], ...]}}, null meaning missing; its
signature lists `features` DT_FLOAT and `categories` DT_STRING. Answers carry no warnings: TF
Serving's answer with one output is the bare list of rows, with no place for them.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import orjson
from starlette.responses import Response

from service import named
from service.card import ModelCard, Task
from service.codecs import columns, json
from service.dataplane import Codec
from service.errors import BadRequest, json_bytes
from service.repository import READY, Entry
from service.runtime import LoadedModel
from service.types.tfserving import PredictRequest

SIGNATURE = "serving_default"
METHOD = "tensorflow/serving/predict"
SIGNATURE_DEF_MAP = "type.googleapis.com/tensorflow.serving.SignatureDefMap"  # the metadata's Any names its type


def _rows(key: str, parent: object, depth: int) -> bool:
    return depth == 0 and key in ("instances", "inputs")


def parse(body: bytes, scope: dict, limit: int) -> PredictRequest:
    """The predict request; 400 for malformed JSON, both or neither format, other signatures (other
    fields are ignored)."""
    data = json.parse(body, "the body must be a JSON object with 'instances' or 'inputs'", _rows)
    req = json.validated(PredictRequest, data, whole="body")
    if req.signature_name not in (None, "", SIGNATURE):
        raise BadRequest(f"Serving signature name: {req.signature_name!r} not found in signature def; "
                         f"the only signature is {SIGNATURE!r}")
    return req


def version(text: str) -> str:
    """A version in the path as TF Serving reads it, a number (`01` is 1); anything else as given."""
    return (text.lstrip("0") or "0") if text.isascii() and text.isdigit() else text


def matrix(req: PredictRequest, model: LoadedModel, max_rows: int) -> np.ndarray:
    """The request's rows as a checked [rows, n_features] float32 matrix (a table model's: its
    named inputs as structured rows)."""
    name, card = model.input.name, model.card
    if card.columns is not None:
        return _named(req, card, max_rows)
    if req.instances is not None:
        rows = req.instances
        if type(rows) is list:
            rows = [_unwrap(row, name, f"instance {i}") if type(row) is dict else row for i, row in enumerate(rows)]
        return json.rows(_plain(rows, card), card, max_rows, "instances")
    rows = _unwrap(req.inputs, name, "'inputs'") if type(req.inputs) is dict else req.inputs
    return json.rows(_plain(rows, card), card, max_rows, "inputs")


def _unwrap(named: dict, name: str, where: str) -> object:
    if list(named) != [name]:
        raise BadRequest(f"{where} names inputs {sorted(named)}; the model's only input is {name!r}")
    return named[name]


def _plain(rows: object, card: ModelCard) -> object:
    if type(rows) is np.ndarray and rows.ndim == 1:  # a flat table: one number per row
        rows = rows.tolist()
    if type(rows) is not list:
        return rows  # json.rows takes a table, or refuses it with the usual message
    if card.n_features == 1:  # one number per instance, as in TF Serving's {"instances": [1.0, 2.0, 5.0]}
        rows = [[r] if type(r) in (int, float) else r for r in rows]
    for i, row in enumerate(rows):
        if type(row) is not list:  # feature-name objects are the native API's, not TF Serving's
            raise BadRequest(f"row {i} must be a list of {card.n_features} numbers, got {json.json_type(row)}")
    return rows


def _named(req: PredictRequest, card: ModelCard, max_rows: int) -> np.ndarray:
    """A table model's inputs: instances {"features": [...], "categories": [...]} or columnar
    {"features": [[...], ...], ...}; a model with one input also takes its rows unnamed."""
    names = [s.name for s in card.graph_inputs]
    if req.instances is None:
        tensors = req.inputs if type(req.inputs) is dict else {names[0]: req.inputs} if len(names) == 1 else None
        if tensors is None:
            raise BadRequest(f"'inputs' must be an object naming the model's inputs {names}")
        return columns.named(card, tensors, max_rows, "'inputs'")
    rows = columns.row_list(req.instances, "'instances'", max_rows)
    tensors: dict[str, list] = {n: [] for n in names}
    for i, row in enumerate(rows):
        if type(row) is not dict:
            if len(names) > 1:
                raise BadRequest(f"instance {i} must be an object naming the model's inputs {names}, "
                                 f"got {json.json_type(row)}")
            row = {names[0]: row}
        if sorted(row) != sorted(names):
            raise BadRequest(f"instance {i} names inputs {sorted(row)}; the model's inputs are {names}")
        for n in names:
            tensors[n].append(row[n])
    return columns.named(card, tensors, max_rows, "instances")


def served_output(card: ModelCard) -> named.OutputInfo:
    """The signature's one output: probabilities for classifiers, the raw output for regression."""
    offered = named.offered(card)
    return offered[0] if card.task is Task.regression else next(o for o in offered if o.name == named.PROBABILITIES)


def post(req: PredictRequest, model: LoadedModel) -> partial:
    """The served output, as `named.outputs` makes it of the model's output rows."""
    return partial(named.outputs, model.card, names=[served_output(model.card).name])


def encode(req: PredictRequest, model: LoadedModel, served: dict[str, np.ndarray], x: np.ndarray) -> Response:
    """{"predictions": ...} for row format, {"outputs": ...} for columnar; NaN becomes null."""
    (out,) = served.values()
    key = "predictions" if req.instances is not None else "outputs"
    return json_bytes(orjson.dumps({key: out}, option=orjson.OPT_SERIALIZE_NUMPY))


def model_status(entries: list[Entry]) -> dict:
    """GetModelStatusResponse, newest version first; a version that failed to load is END with its reason."""
    return {"model_version_status": [
        {"version": str(e.version), "state": "AVAILABLE" if e.status == READY else "END",
         "status": {"error_code": "OK", "error_message": ""} if e.status == READY
         else {"error_code": "UNKNOWN", "error_message": e.reason or ""}}
        for e in sorted(entries, key=lambda e: -e.version)]}


def model_metadata(model: LoadedModel) -> dict:
    """GetModelMetadataResponse with the "serving_default" signature."""
    out = served_output(model.card)
    signature = {"inputs": {i.name: _tensor(i.name, i.shape[-1], i.dtype) for i in model.card.graph_inputs},
                 "outputs": {out.name: _tensor(out.name, out.width)}, "method_name": METHOD}
    return {"model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
            "metadata": {"signature_def": {"@type": SIGNATURE_DEF_MAP, "signature_def": {SIGNATURE: signature}}}}


def _tensor(name: str, width: int, dtype: str = "float32") -> dict:
    dims = [{"size": "-1", "name": ""}, {"size": str(width), "name": ""}]
    return {"dtype": "DT_STRING" if dtype == "string" else "DT_FLOAT",
            "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": name}


CODEC = Codec(parse, matrix, post, encode)
