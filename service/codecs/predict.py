"""The native predict API's wire format: `{"model", "version", "instances", "top_k", "format"}`
in, `{"model", "version", "task", "predictions"}` out, one task-aware prediction per row; with
`"format": "columns"` the predictions are one object of columns, an entry per row in each
(`service.tasks`).

A table model's rows may hold strings and nulls (`service.codecs.columns`); a row with filled
features or unseen categories gets a `warnings` list on its prediction, other rows none. As
columns, `warnings` is there when any row has some: a list per row, empty for the others."""

from __future__ import annotations

from functools import partial

import numpy as np
import orjson
from starlette.responses import Response

from service import tasks
from service.codecs import columns, json
from service.dataplane import Codec
from service.errors import BadRequest, json_bytes
from service.runtime import LoadedModel

ANY_MODEL = frozenset({"model", "version", "instances", "top_k", "format"})
ONE_MODEL = frozenset({"version", "instances", "top_k", "format"})
ONE_VERSION = frozenset({"instances", "top_k", "format"})
NOT_OBJECT = "the body must be a JSON object with 'instances', got {got}"


def _instances(key: str, parent: object, depth: int) -> bool:
    return depth == 0 and key == "instances"


def parse(fields: frozenset[str], body: bytes, scope: dict, limit: int) -> dict:
    """The body's fields, `instances` a float64 table when it is a table of numbers; 400 for
    anything but an object of known fields holding `instances`."""
    data = json.parse(body, NOT_OBJECT, _instances)
    unknown = data.keys() - fields
    if unknown:
        raise BadRequest(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    if "instances" not in data:
        raise BadRequest("missing field 'instances'")
    return data


def target(data: dict) -> tuple[str | None, int | str | None]:
    """The model and version the body names, if any."""
    model, version = data.get("model"), data.get("version")
    if model is not None and type(model) is not str:
        raise BadRequest(f"'model' must be a string, got {json.json_type(model)}")
    if version is not None and type(version) not in (int, str):
        raise BadRequest(f"'version' must be an integer or a string, got {json.json_type(version)}")
    return model, version


def matrix(data: dict, model: LoadedModel, max_rows: int) -> np.ndarray:
    """The rows as a checked float32 matrix (a table model's: structured rows)."""
    return columns.instances(data["instances"], model.card, max_rows)


def top_k(data: dict) -> int:
    """The optional `top_k` (multiclass only, ignored otherwise): an integer >= 0; 0 ranks no
    classes (an empty `top_k` list: the label and its probability only, for bulk clients)."""
    k = data.get("top_k")
    if k is None:
        return tasks.DEFAULT_TOP_K
    if type(k) is not int or k < 0:
        raise BadRequest(f"'top_k' must be an integer >= 0, got {json.show(k)}")
    return k


def post(data: dict, model: LoadedModel) -> partial:
    """One prediction per row, the top `top_k` classes for multiclass models; with the optional
    `"format": "columns"` (else "rows", the default), their columns."""
    form = data.get("format")
    if form is None or form == "rows":
        return partial(tasks.postprocess, model.card, top_k=top_k(data))
    if form == "columns":
        return partial(tasks.postprocess, model.card, top_k=top_k(data), columns=True)
    raise BadRequest(f"'format' must be \"rows\" or \"columns\", got {json.show(form)}")


def encode(data: dict, model: LoadedModel, predictions: tasks.RowTexts | list[bytes] | dict,
           x: np.ndarray) -> Response:
    """The predictions (the rows' JSON texts: a whole batch's, or a list of a request's share of
    one; or the columns) with the model that made them; a table model's rows with something to
    say have their `warnings`."""
    notes = None if model.card.columns is None else columns.warnings(model.card, x)
    head = {"model": model.name, "version": model.version, "task": model.card.task.value}
    if type(predictions) is dict:
        if notes is not None:
            predictions = {**predictions, "warnings": notes}
        return json_bytes(orjson.dumps({**head, "predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY))
    whole = type(predictions) is tasks.RowTexts
    if notes is not None:
        rows = b",".join([p[:-1] + b',"warnings":' + orjson.dumps(w) + b"}" if w else p
                          for p, w in zip(predictions.rows() if whole else predictions, notes)])
    else:
        rows = predictions.json() if whole else b",".join(predictions)
    head = orjson.dumps(head)
    return json_bytes(b"".join((head[:-1], b',"predictions":[', rows, b"]}")))


def codec(fields: frozenset[str]) -> Codec:
    """The codec of a predict route whose body may hold `fields`."""
    return Codec(partial(parse, fields), matrix, post, encode, target if fields & {"model", "version"} else None)
