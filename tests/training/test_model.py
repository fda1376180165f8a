"""Model building: task-shaped outputs ending in logits, losses on logits, scaling in the graph."""

import keras
import numpy as np
import pytest

from service.card import Task
from training.model import Affine, build_model, loss_for, output_units, standardizer

X = np.random.default_rng(0).normal(5.0, 3.0, size=(50, 4)).astype(np.float32)


@pytest.mark.parametrize("task,n_targets,units", [
    (Task.binary, 2, 1), (Task.multiclass, 10, 10), (Task.multilabel, 3, 3), (Task.regression, 1, 1),
])
def test_output_units(task, n_targets, units):
    assert output_units(task, n_targets) == units
    model = build_model(task, X, units)
    assert model.output_shape == (None, units)
    assert model.input_shape == (None, 4)


def test_default_hidden_layers_are_relu_25_15():
    model = build_model(Task.multiclass, X, 10)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [25, 15, 10]
    assert [d.activation.__name__ for d in dense] == ["relu", "relu", "linear"]


def test_custom_hidden_and_l2():
    model = build_model(Task.binary, X, 1, hidden=(8, 4, 2), l2=1e-3)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [8, 4, 2, 1]
    assert all(isinstance(d.kernel_regularizer, keras.regularizers.L2) for d in dense)
    assert dense[0].kernel_regularizer.l2 == pytest.approx(1e-3)
    assert build_model(Task.binary, X, 1).layers[2].kernel_regularizer is None


@pytest.mark.parametrize("task,cls", [
    (Task.binary, keras.losses.BinaryCrossentropy),
    (Task.multilabel, keras.losses.BinaryCrossentropy),
    (Task.multiclass, keras.losses.SparseCategoricalCrossentropy),
    (Task.regression, keras.losses.MeanSquaredError),
])
def test_losses_take_logits(task, cls):
    loss = loss_for(task)
    assert isinstance(loss, cls)
    if task is not Task.regression:
        assert loss.get_config()["from_logits"] is True


def test_scaling_is_fitted_on_training_rows_and_lives_in_the_graph():
    model = build_model(Task.regression, X, 1, hidden=())
    scaling = model.get_layer("scaling")
    scaled = keras.ops.convert_to_numpy(scaling(X))
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(axis=0), 1, atol=1e-4)
    assert not scaling.trainable_weights  # frozen: fitting never moves the statistics


def test_constant_column_is_centred_not_divided_by_zero():
    x = np.column_stack([np.zeros(10), np.arange(10)]).astype(np.float32)
    scale, offset = standardizer(x)
    assert np.isfinite(scale).all() and scale[0] == 1.0 and offset[0] == 0.0


def test_regression_target_units_and_relu_output():
    model = build_model(Task.regression, X, 1, hidden=(3,), target_scale=(np.array([50.0]),
                        np.array([150.0])), output_activation="relu")
    names = [layer.name for layer in model.layers]
    assert names[-2:] == ["target_units", "non_negative"]
    assert (model.predict(X * -100, verbose=0) >= 0).all()


def test_output_activation_is_for_regression_only():
    with pytest.raises(ValueError, match="regression only"):
        build_model(Task.multiclass, X, 3, output_activation="relu")


def test_affine_layer_math():
    layer = Affine([2.0, 0.5], [1.0, -1.0])
    out = keras.ops.convert_to_numpy(layer(np.array([[1.0, 4.0]], dtype=np.float32)))
    assert out.tolist() == [[3.0, 1.0]]


def _two_scales(rows: int = 600):
    from training.datasets import Dataset, Split

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 2)).astype(np.float32)
    y = np.column_stack([0.001 * x[:, 0], 1e6 + 1e5 * x[:, 1]]).astype(np.float64)
    a, b = int(rows * 0.6), int(rows * 0.8)
    data = Dataset("two-scales", Task.regression, x, y, ["a", "b"], ["small", "big"], "two exact lines")
    return data, Split(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])


def test_every_regression_target_is_learned_whatever_its_units():
    # The loss was the squared error in target units, over the targets' mean variance: a target a
    # billion times smaller than the other was all but absent from it (test R^2 0.0005).
    from sklearn.metrics import r2_score

    from training.config import Config
    from training.train import fit

    data, s = _two_scales()
    model = fit(data, s, Config(hidden=(8,), epochs=60, l2=0.0, patience=60)).model
    predicted = model.predict(s.x_test, verbose=0)
    r2 = [r2_score(s.y_test[:, j], predicted[:, j]) for j in range(2)]
    assert min(r2) > 0.9, r2


def test_a_relu_output_is_refused_for_targets_below_zero():
    from training.config import Config
    from training.train import fit

    data, s = _two_scales()
    s.y_train[0, 0] = -2.5
    with pytest.raises(ValueError, match="--output-activation relu answers values of 0 or more only, and the "
                                         "training targets hold negative ones \\(the least -2.5\\)"):
        fit(data, s, Config(output_activation="relu"))
