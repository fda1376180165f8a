"""The columns' encoding as an ONNX graph, put in front of the network so the served model takes
raw values: numbers with NaN for missing, category text with "" for missing.

    features   [N, n_numeric]  float32 -> IsNaN, Where: NaN becomes the column's fill
    categories [N, n_category] string  -> per column: ai.onnx.ml LabelEncoder to the category's
        index ("" and the --na-values texts to the fill's index, an unseen value to -1), Equal
        against 0..k-1, Cast:
        one-hot, all zeros for an unseen value
    Concat -> the network's `features`, in training/columns.py `encode`'s order

ONNX-ML operators and not Keras preprocessing layers: an adapted keras.layers.Normalization
exports its statistics as extra graph inputs (see training/model.py Affine), and
keras.layers.StringLookup exports a TensorFlow hash-table lookup (LookupTableFindV2) that tf2onnx
leaves in the graph, which onnxruntime then refuses to load. Equal against a range
rather than OneHot: OneHot reads -1 as the last category, where an unseen value must be all zeros.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.card import Column, TensorSpec
from training.columns import CATEGORIES, FEATURES, MISSING, categorical_columns, numeric_columns

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 2  # LabelEncoder's keys/values form; what tf2onnx declares, so the two graphs merge
ENCODED = "encoded"
NETWORK = "network/"  # prefix for the network's names, so they cannot clash with the encoding's
UNSEEN_INDEX = -1


def _numeric_nodes(numeric: list[Column], nodes: list, constants: list) -> str:
    constants.append(numpy_helper.from_array(np.array([c.fill for c in numeric], np.float32),
                                             "fill_numeric"))
    nodes += [helper.make_node("IsNaN", [FEATURES], ["numeric_missing"]),
              helper.make_node("Where", ["numeric_missing", "fill_numeric", FEATURES],
                               ["numeric_filled"])]
    return "numeric_filled"


def _one_hot_nodes(j: int, column: Column, nodes: list, constants: list) -> str:
    """One categorical column's one-hot block, [N, k]."""
    k = len(column.categories)
    missing = [MISSING, *column.missing_texts]
    keys = [*column.categories, *missing]
    values = [*range(k), *[column.categories.index(str(column.fill))] * len(missing)]
    constants += [numpy_helper.from_array(np.array(j, np.int64), f"column_{j}"),
                  numpy_helper.from_array(np.arange(k, dtype=np.int64)[None, :], f"range_{j}")]
    nodes += [helper.make_node("Gather", [CATEGORIES, f"column_{j}"], [f"text_{j}"], axis=1),
              helper.make_node("LabelEncoder", [f"text_{j}"], [f"index_{j}"], domain=ML_DOMAIN,
                               keys_strings=keys, values_int64s=values,
                               default_int64=UNSEEN_INDEX),
              helper.make_node("Unsqueeze", [f"index_{j}", "axis_1"], [f"index_{j}_2d"]),
              helper.make_node("Equal", [f"index_{j}_2d", f"range_{j}"], [f"hot_{j}"]),
              helper.make_node("Cast", [f"hot_{j}"], [f"one_hot_{j}"], to=TensorProto.FLOAT)]
    return f"one_hot_{j}"


def encoding_graph(columns: list[Column], opset: int, ir_version: int,
                   ml_opset: int = ML_OPSET) -> onnx.ModelProto:
    """The encoding alone: raw inputs in, the network's input matrix out as `encoded`."""
    nodes, constants, parts, inputs = [], [], [], []
    numeric, categorical = numeric_columns(columns), categorical_columns(columns)
    if numeric:
        inputs.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, [None, len(numeric)]))
        parts.append(_numeric_nodes(numeric, nodes, constants))
    if categorical:
        inputs.append(helper.make_tensor_value_info(CATEGORIES, TensorProto.STRING,
                                                    [None, len(categorical)]))
        constants.append(numpy_helper.from_array(np.array([1], np.int64), "axis_1"))
        parts += [_one_hot_nodes(j, c, nodes, constants) for j, c in enumerate(categorical)]
    width = len(numeric) + sum(len(c.categories) for c in categorical)
    nodes.append(helper.make_node("Concat", parts, [ENCODED], axis=1))
    graph = helper.make_graph(nodes, "encoding", inputs,
                              [helper.make_tensor_value_info(ENCODED, TensorProto.FLOAT, [None, width])],
                              initializer=constants)
    model = helper.make_model(graph, ir_version=ir_version,
                              opset_imports=[helper.make_opsetid("", opset),
                                             helper.make_opsetid(ML_DOMAIN, ml_opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _opset(model: onnx.ModelProto, domains: tuple[str, ...]) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in domains), None)


def prepend_encoding(path: Path, columns: list[Column]) -> list[TensorSpec]:
    """Rewrite the network graph at `path` (input `features`: the encoded matrix) to take the raw
    columns instead; returns the graph inputs it now has, in order."""
    network = onnx.load(str(path))
    output = network.graph.output[0].name
    encoding = encoding_graph(columns, _opset(network, ("", "ai.onnx")), network.ir_version,
                              _opset(network, (ML_DOMAIN,)) or ML_OPSET)
    network = onnx.compose.add_prefix(network, NETWORK, rename_outputs=False)
    if not _opset(network, (ML_DOMAIN,)):
        network.opset_import.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))
    merged = onnx.compose.merge_models(encoding, network, io_map=[(ENCODED, NETWORK + FEATURES)],
                                       outputs=[output])
    unique = {(o.domain or "", o.version): o for o in merged.opset_import}  # merge lists both graphs'
    merged.opset_import.clear()
    merged.opset_import.extend(unique.values())
    onnx.checker.check_model(merged, full_check=True)
    onnx.save(merged, str(path))
    return [_spec(i) for i in merged.graph.input]


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dtype = "string" if tensor.elem_type == TensorProto.STRING else "float32"
    return TensorSpec(name=value.name, shape=[-1, tensor.shape.dim[1].dim_value], dtype=dtype)
