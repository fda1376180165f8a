"""A tiny table model, built with onnx.helper as training exports one (issue 15): numeric and
categorical raw columns, missing values filled and categories one-hot encoded inside the graph.

Columns, in card order: `age` (numeric, fill 28.0), `class` (categorical: 1st, 2nd, 3rd; fill
3rd), `fare` (numeric, fill 10.0). The graph takes `features` float32 [N, 2] (age, fare) and
`categories` string [N, 1] (class):

    features -> IsNaN / Where (NaN -> fill)                                  \\
    categories -> LabelEncoder (category -> index, "" -> the fill's, unseen -> 3) -> OneHot (depth 3:
                  index 3 is out of range, so all zeros)                     -> Concat -> MatMul + Add

so `value = age + 0.5 * fare + (10, 20, 30 for 1st, 2nd, 3rd; 0 unseen) + 1`, a regression. The
same builder makes models of some of these columns only (`features` or `categories` alone).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.card import CARD_FILE, MODEL_FILE, Column, Golden, ModelCard, sha256_file, write_card

OPSET, ML_OPSET, IR_VERSION = 17, 2, 8
NAME = "tiny-table"
CATEGORIES = ["1st", "2nd", "3rd"]
COLUMNS = [
    Column(name="age", kind="numeric", fill=28.0, missing_in_training=2),
    Column(name="class", kind="categorical", fill="3rd", categories=CATEGORIES),
    Column(name="fare", kind="numeric", fill=10.0),
]
WEIGHTS = {"age": [1.0], "fare": [0.5], "class": [10.0, 20.0, 30.0]}  # numeric: one; categorical: one per category
BIAS = 1.0
GOLDEN = [[22.0, "1st", 7.25], [None, "2nd", 30.0], [40.0, None, None], [35.0, "crew", 8.0]]


def expected(row: list, columns: list[Column] = COLUMNS) -> float:
    """What the graph answers for one row in card order (None: missing), computed in float32."""
    total = np.float32(0.0)
    for value, c in zip(row, columns):
        w = WEIGHTS[c.name]
        if c.kind == "numeric":
            total += np.float32(c.fill if value is None else value) * np.float32(w[0])
        else:
            value = c.fill if value is None or value == "" else value
            total += np.float32(w[c.categories.index(value)] if value in c.categories else 0.0)
    return float(total + np.float32(BIAS))


def graph(columns: list[Column] = COLUMNS) -> bytes:
    """The serialized graph (module docstring) for these columns: `features` only when some are
    numeric, `categories` only when some are categorical."""
    numeric = [c for c in columns if c.kind == "numeric"]
    categorical = [c for c in columns if c.kind == "categorical"]
    init = [numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "onoff"),
            numpy_helper.from_array(np.array([[w] for c in numeric + categorical for w in WEIGHTS[c.name]],
                                             np.float32), "W"),
            numpy_helper.from_array(np.array([BIAS], np.float32), "B")]
    nodes, parts, inputs = [], [], []
    if numeric:
        init.append(numpy_helper.from_array(np.array([c.fill for c in numeric], np.float32), "fills"))
        nodes += [helper.make_node("IsNaN", ["features"], ["nan"]),
                  helper.make_node("Where", ["nan", "fills", "features"], ["filled"])]
        parts.append("filled")
        inputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(numeric)]))
    for m, c in enumerate(categorical):
        nodes += _one_hot(m, c, init)
        parts.append(f"onehot{m}")
    if categorical:
        inputs.append(helper.make_tensor_value_info("categories", TensorProto.STRING, ["batch", len(categorical)]))
    nodes += [helper.make_node("Concat", parts, ["x"], axis=1), helper.make_node("MatMul", ["x", "W"], ["xw"]),
              helper.make_node("Add", ["xw", "B"], ["values"])]
    output = helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch", 1])
    g = helper.make_graph(nodes, NAME, inputs, [output], initializer=init)
    model = helper.make_model(g, ir_version=IR_VERSION, opset_imports=[
        helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _one_hot(m: int, c: Column, init: list) -> list:
    """Column m of `categories`: category -> index ("" -> the fill's, unseen -> k, out of range) -> one-hot."""
    k = len(c.categories)
    init += [numpy_helper.from_array(np.array([m], np.int64), f"start{m}"),
             numpy_helper.from_array(np.array([m + 1], np.int64), f"end{m}"),
             numpy_helper.from_array(np.array([1], np.int64), f"axis{m}"),
             numpy_helper.from_array(np.array(k, np.int64), f"depth{m}"),
             numpy_helper.from_array(np.array([-1, k], np.int64), f"flat{m}")]
    return [helper.make_node("Slice", ["categories", f"start{m}", f"end{m}", f"axis{m}"], [f"column{m}"]),
            helper.make_node("LabelEncoder", [f"column{m}"], [f"index{m}"], domain="ai.onnx.ml",
                             keys_strings=c.categories + [""], default_int64=k,
                             values_int64s=list(range(k)) + [c.categories.index(c.fill)]),
            helper.make_node("OneHot", [f"index{m}", f"depth{m}", "onoff"], [f"onehot3d{m}"], axis=-1),
            helper.make_node("Reshape", [f"onehot3d{m}", f"flat{m}"], [f"onehot{m}"])]


def card(sha256: str, golden: list[list] = GOLDEN, columns: list[Column] = COLUMNS, **changes) -> ModelCard:
    """The model's card; `input` left out on purpose: a writer giving `inputs` may."""
    n_numeric = sum(c.kind == "numeric" for c in columns)
    inputs = ([{"name": "features", "shape": [-1, n_numeric]}] if n_numeric else []) + (
        [{"name": "categories", "shape": [-1, len(columns) - n_numeric], "dtype": "string"}]
        if n_numeric < len(columns) else [])
    return ModelCard(
        name=NAME, version=1, task="regression", description="tiny table test model", inputs=inputs,
        output={"name": "values", "shape": [-1, 1]}, columns=columns, labels=["y"], sha256=sha256,
        golden=[Golden(input=row, output=[expected(row, columns)]) for row in golden], **changes)


def write(root: Path, name: str = NAME, columns: list[Column] = COLUMNS, **changes) -> Path:
    """Write `<root>/<name>/1/{model.onnx,card.json}`; returns the version folder. The golden rows
    are GOLDEN's values of these columns."""
    folder = Path(root) / name / "1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(graph(columns))
    golden = [[v for v, c in zip(row, COLUMNS) if c in columns] for row in GOLDEN]
    write_card(card(sha256_file(folder / MODEL_FILE), golden, columns, **changes), folder / CARD_FILE)
    return folder


def close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-5)
