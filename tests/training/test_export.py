"""ONNX export: one input, stable names, free batch dimension, parity proven or the export fails."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.card import Task
from training.config import Config
from training.datasets import load_builtin, split
from training.export import ExportError, check_parity, export_onnx, golden_examples
from training.model import build_model
from training.train import fit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits_fit():
    data = load_builtin("digits")
    s = split(data, seed=3)
    return data, s, fit(data, s, Config(epochs=3, seed=3))


@pytest.fixture(scope="module")
def exported(digits_fit, tmp_path_factory):
    data, s, fitted = digits_fit
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    specs = export_onnx(fitted.model, data.task, path)
    return path, specs


def test_graph_has_exactly_one_input_and_named_output(exported):
    path, (input_spec, output_spec) = exported
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["features"]
    assert [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value")  # free batch dimension
    assert dims[1].dim_value == 64
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert input_spec.shape == [-1, 64] and output_spec.shape == [-1, 10]
    assert output_spec.name == "logits"
    assert max(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")) in (17, 18)


def test_scaling_is_inside_the_graph(exported, digits_fit):
    """Raw 0-16 pixels go in; the answer equals Keras on the same raw rows."""
    path, _ = exported
    _, s, fitted = digits_fit
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": s.x_test[:7]})[0]
    np.testing.assert_allclose(got, fitted.model.predict(s.x_test[:7], verbose=0), atol=1e-5)


def test_parity_passes_at_two_batch_sizes(exported, digits_fit):
    path, _ = exported
    _, s, fitted = digits_fit
    parity = check_parity(fitted.model, path, s.x_test)
    assert parity.passed and parity.max_abs_diff <= 1e-5
    assert len(set(parity.batch_sizes)) == 2 and parity.rows == len(s.x_test)


def test_parity_failure_stops_the_export(exported, digits_fit):
    """A graph that disagrees with the Keras model must fail loudly, not produce a card."""
    path, _ = exported
    data, s, _ = digits_fit
    other = build_model(data.task, s.x_train, 10)  # fresh random weights
    with pytest.raises(ExportError, match="parity failed"):
        check_parity(other, path, s.x_test)


def test_golden_examples_are_keras_outputs(digits_fit):
    _, s, fitted = digits_fit
    golden = golden_examples(fitted.model, s.x_test, n=3)
    assert len(golden) == 3 and len(golden[0].input) == 64 and len(golden[0].output) == 10
    np.testing.assert_allclose(golden[1].output, fitted.model.predict(s.x_test[1:2], verbose=0)[0],
                               atol=1e-6)


def test_regression_output_in_target_units(tmp_path):
    data = load_builtin("diabetes")
    s = split(data, seed=3)
    fitted = fit(data, s, Config(epochs=5, seed=3))
    path = tmp_path / "model.onnx"
    _, output_spec = export_onnx(fitted.model, Task.regression, path)
    assert output_spec.name == "values" and output_spec.shape == [-1, 1]
    parity = check_parity(fitted.model, path, s.x_test)
    assert parity.max_abs_diff <= parity.tolerance * 10
    out = ort.InferenceSession(str(path)).run(None, {"features": s.x_test})[0]
    assert 25 < out.mean() < 350  # disease progression units, not standardized


def test_parity_fails_on_outputs_that_are_not_finite(tmp_path, digits_fit):
    """NaN against NaN proves nothing: max() once dropped it and reported a difference of 0."""
    data, s, fitted = digits_fit
    model = build_model(data.task, s.x_train, 10)
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    export_onnx(model, data.task, tmp_path / "model.onnx")
    with pytest.raises(ExportError, match=rf"parity failed: the outputs are not finite \(NaN or inf\) on "
                                          rf"{len(s.x_test)} of {len(s.x_test)} rows"):
        check_parity(model, tmp_path / "model.onnx", s.x_test)

