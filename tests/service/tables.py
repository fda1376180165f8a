"""A tiny table model, built with onnx.helper as training exports one (issue 15): numeric and
categorical raw columns, missing values filled and categories one-hot encoded inside the graph.

Columns, in card order: `age` (numeric, fill 28.0), `class` (categorical: 1st, 2nd, 3rd; fill
3rd), `fare` (numeric, fill 10.0). The graph takes `features` float32 [N, 2] (age, fare) and
`categories` string [N, 1] (class):

    features -> IsNaN / Where (NaN -> fill)                                  \\
    categories -> LabelEncoder (category -> index, "" -> the fill's, unseen -> 3) -> OneHot (depth 3:
                  index 3 is out of range, so all zeros)                     -> Concat -> MatMul + Add

so `value = age + 0.5 * fare + (10, 20, 30 for 1st, 2nd, 3rd; 0 unseen) + 1`, a regression.
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
W_NUMERIC = [1.0, 0.5]
W_CLASS = [10.0, 20.0, 30.0]
BIAS = 1.0
GOLDEN = [[22.0, "1st", 7.25], [None, "2nd", 30.0], [40.0, None, None], [35.0, "crew", 8.0]]


def expected(row: list) -> float:
    """What the graph answers for one row in card order (None: missing), computed in float32."""
    age, klass, fare = row
    age = np.float32(COLUMNS[0].fill if age is None else age)
    fare = np.float32(COLUMNS[2].fill if fare is None else fare)
    klass = COLUMNS[1].fill if klass is None or klass == "" else klass
    onehot = W_CLASS[CATEGORIES.index(klass)] if klass in CATEGORIES else 0.0
    return float(np.float32(age * np.float32(W_NUMERIC[0]) + fare * np.float32(W_NUMERIC[1]))
                 + np.float32(onehot) + np.float32(BIAS))


def graph() -> bytes:
    """The serialized graph (module docstring)."""
    k = len(CATEGORIES)
    init = [numpy_helper.from_array(np.array([c.fill for c in COLUMNS if c.kind == "numeric"], np.float32), "fills"),
            numpy_helper.from_array(np.array(k, np.int64), "depth"),
            numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "onoff"),
            numpy_helper.from_array(np.array([-1, k], np.int64), "flat"),
            numpy_helper.from_array(np.array([[w] for w in W_NUMERIC + W_CLASS], np.float32), "W"),
            numpy_helper.from_array(np.array([BIAS], np.float32), "B")]
    fill = CATEGORIES.index(COLUMNS[1].fill)
    nodes = [
        helper.make_node("IsNaN", ["features"], ["nan"]),
        helper.make_node("Where", ["nan", "fills", "features"], ["filled"]),
        helper.make_node("LabelEncoder", ["categories"], ["index"], domain="ai.onnx.ml",
                         keys_strings=CATEGORIES + [""], values_int64s=list(range(k)) + [fill], default_int64=k),
        helper.make_node("OneHot", ["index", "depth", "onoff"], ["onehot3"], axis=-1),
        helper.make_node("Reshape", ["onehot3", "flat"], ["onehot"]),
        helper.make_node("Concat", ["filled", "onehot"], ["x"], axis=1),
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["values"]),
    ]
    g = helper.make_graph(
        nodes, NAME,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("categories", TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch", 1])], initializer=init)
    model = helper.make_model(g, ir_version=IR_VERSION, opset_imports=[
        helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def card(sha256: str, golden: list[list] = GOLDEN, **changes) -> ModelCard:
    """The model's card; `input` left out on purpose: a writer giving `inputs` may."""
    return ModelCard(
        name=NAME, version=1, task="regression", description="tiny table test model",
        inputs=[{"name": "features", "shape": [-1, 2]}, {"name": "categories", "shape": [-1, 1], "dtype": "string"}],
        output={"name": "values", "shape": [-1, 1]}, columns=COLUMNS, labels=["y"], sha256=sha256,
        golden=[Golden(input=row, output=[expected(row)]) for row in golden], **changes)


def write(root: Path, name: str = NAME, **changes) -> Path:
    """Write `<root>/<name>/1/{model.onnx,card.json}`; returns the version folder."""
    folder = Path(root) / name / "1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(graph())
    write_card(card(sha256_file(folder / MODEL_FILE), **changes), folder / CARD_FILE)
    return folder


def close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-5)
