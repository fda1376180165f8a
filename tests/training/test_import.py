"""The import command: models made elsewhere (Keras files, ONNX graphs, scikit-learn via skl2onnx)
become served versions whose answers are right on every protocol, whatever their outputs hold."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.card import read_card
from service.config import Settings
from service.main import create_app
from tests.service import helpers
from tests.training.test_cli import run_cli
from training.importer import main

pytestmark = pytest.mark.anyio
ROWS = np.random.default_rng(3).normal(size=(16, 4)).astype(np.float32) * 2
W = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0], [2.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], np.float32)
B = np.array([0.1, -0.3, 0.2], np.float32)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def keras_model(last: str):
    """A small untrained network as a user would write it, ending as `last` says."""
    import keras

    keras.utils.set_random_seed(0)
    head = {"softmax": keras.layers.Dense(3, activation="softmax"),
            "sigmoid": keras.layers.Dense(1, activation="sigmoid"),
            "multilabel": keras.layers.Dense(3, activation="sigmoid"),
            "regressor": keras.layers.Dense(2)}[last]
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), head])


def onnx_graph(path, last: str | None, inputs=None, out_type=TensorProto.FLOAT, tail=(), opset=17, w=W, b=B,
               constants: dict[str, float] | None = None) -> None:
    """x @ w + b, ending in `last` (e.g. "Softmax") when given, then the `tail` nodes (from "last" to
    "out", with the constant "eps"); `inputs` replaces the one input."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "B"], ["scores" if last or tail else "out"])]
    if last:
        nodes.append(helper.make_node(last, ["scores"], ["last" if tail else "out"]))
    nodes += tail
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", len(w)])]
    output = helper.make_tensor_value_info("out", out_type, ["batch", len(b)])
    weights = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    weights += [numpy_helper.from_array(np.array(1e-3, np.float32), "eps")] if tail else []
    weights += [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (constants or {}).items()]
    graph = helper.make_graph(nodes, "g", inputs, [output], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    path.write_bytes(model.SerializeToString())


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def run_import(capsys, *args: str) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


async def answers(root, name: str, rows: np.ndarray) -> dict:
    """What the served model answers for `rows` on /predict, V2 (every output) and TF Serving."""
    async with helpers.serve(create_app(Settings(model_root=root, poll_seconds=0))) as client:
        meta = (await client.get(f"/models/{name}")).json()
        assert meta["status"] == "ready", meta
        native = (await client.post(f"/models/{name}/predict", json={"instances": rows.tolist()})).json()
        body = {"inputs": [{"name": meta["card"]["input"]["name"], "shape": list(rows.shape),
                            "datatype": "FP32", "data": rows.ravel().tolist()}]}
        v2 = (await client.post(f"/v2/models/{name}/infer", json=body)).json()
        tfs = (await client.post(f"/v1/models/{name}:predict", json={"instances": rows.tolist()})).json()
    outputs = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in v2["outputs"]}
    return {"meta": meta, "predict": native["predictions"], "v2": outputs, "tfs": np.array(tfs["predictions"])}


@pytest.mark.parametrize("last,task,labels,suffix", [
    ("softmax", "multiclass", "cat,dog,emu", ".keras"),
    ("sigmoid", "binary", "no,yes", ".keras"),
    ("multilabel", "multilabel", "even,prime,round", ".keras"),
    ("regressor", "regression", "y1,y2", ".h5"),
])
async def test_keras_models_serve_what_keras_answers(tmp_path, capsys, last, task, labels, suffix):
    model = keras_model(last)
    model.save(tmp_path / f"user{suffix}")
    expected = model.predict(ROWS, verbose=0).astype(np.float64)
    np.save(tmp_path / "rows.npy", ROWS)
    code, err = run_import(capsys, tmp_path / f"user{suffix}", "--task", task, "--labels", labels,
                           "--samples", tmp_path / "rows.npy", "--out", tmp_path / "models")
    assert code == 0, err
    card = read_card(tmp_path / "models/user/1/card.json")
    assert card.output_kind.value == ("values" if task == "regression" else "probabilities")
    assert card.parity.passed and card.parity.rows == len(ROWS) and card.source.format == "keras"
    assert card.training is None and card.metrics is None and card.baseline is None
    got = await answers(tmp_path / "models", "user", ROWS)
    names = labels.split(",")
    raw = got["v2"][card.output.name]
    np.testing.assert_allclose(raw, expected, atol=1e-5)  # the raw V2 output is the graph's
    if task == "regression":
        np.testing.assert_allclose([p["value"] for p in got["predict"]], expected, atol=1e-5)
        np.testing.assert_allclose(got["tfs"], expected, atol=1e-5)
        return
    np.testing.assert_allclose(got["v2"]["probabilities"], expected, atol=1e-5)  # no second sigmoid/softmax
    np.testing.assert_allclose(got["tfs"], expected, atol=1e-5)
    if task == "binary":
        assert [p["label"] for p in got["predict"]] == [names[int(p >= 0.5)] for p in expected[:, 0]]
        np.testing.assert_allclose([p["probability"] for p in got["predict"]], expected[:, 0], atol=1e-5)
        assert (expected[:, 0] < 0.5).any() and (expected[:, 0] >= 0.5).any()  # both labels are exercised
    elif task == "multiclass":
        assert [p["label"] for p in got["predict"]] == [names[i] for i in expected.argmax(axis=1)]
        np.testing.assert_allclose([p["probability"] for p in got["predict"]], expected.max(axis=1), atol=1e-5)
    else:
        assert [p["labels"] for p in got["predict"]] == [[n for n, p in zip(names, row) if p >= 0.5] for row in expected]


@pytest.mark.parametrize("last,kind", [("Softmax", "probabilities"), (None, "logits")])
async def test_an_onnx_graph_serves_by_what_its_last_node_makes(tmp_path, capsys, last, kind):
    onnx_graph(tmp_path / "graph.onnx", last)
    code, err = run_import(capsys, tmp_path / "graph.onnx", "--task", "multiclass", "--labels", "a,b,c",
                           "--out", tmp_path / "models")
    assert code == 0, err
    card = read_card(tmp_path / "models/graph/1/card.json")
    assert card.output_kind.value == kind and card.parity is None and len(card.golden) == 5
    logits = ROWS.astype(np.float64) @ W + B
    got = await answers(tmp_path / "models", "graph", ROWS)
    np.testing.assert_allclose(got["v2"]["probabilities"], softmax(logits), atol=1e-5)
    np.testing.assert_allclose(got["v2"]["out"], softmax(logits) if last else logits, atol=1e-5)
    np.testing.assert_allclose([p["probability"] for p in got["predict"]], softmax(logits).max(axis=1), atol=1e-5)
    np.testing.assert_allclose(got["tfs"], softmax(logits), atol=1e-5)


@pytest.mark.parametrize("last,task", [("Softmax", "multiclass"), ("Sigmoid", "binary")])
def test_logits_said_of_a_softmax_or_sigmoid_end_are_refused(tmp_path, capsys, last, task):
    # A sigmoid's probabilities served as logits get a second sigmoid: every answer wrong, none refused.
    b = B[:1] if task == "binary" else B
    onnx_graph(tmp_path / "graph.onnx", last, w=W[:, :len(b)], b=b)
    code, err = run_import(capsys, tmp_path / "graph.onnx", "--task", task, "--output-kind", "logits",
                           "--out", tmp_path / "models")
    assert code == 2 and err.count("\n") == 1, err
    assert f"--output-kind logits contradicts the model: output 'out' comes from a {last} node, so it outputs " \
        "probabilities; leave --output-kind out" in err, err
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("after", ["Dropout", "Identity", "Flatten", "Reshape"])
@pytest.mark.parametrize("last,task,labels", [("softmax", "multiclass", "a,b,c"), ("sigmoid", "binary", "no,yes")])
def test_a_keras_softmax_or_sigmoid_is_found_past_layers_that_pass_it_through(tmp_path, capsys, after, last,
                                                                               task, labels):
    # A Dropout after the softmax hid it: the kind was asked for, and logits taken, so every answer
    # got a second softmax (or sigmoid: every binary row labelled positive).
    import keras

    model = keras_model(last)
    width = model.outputs[0].shape[1]
    layer = {"Dropout": keras.layers.Dropout(0.1), "Identity": keras.layers.Identity(),
             "Flatten": keras.layers.Flatten(), "Reshape": keras.layers.Reshape((width,))}[after]
    model = keras.Sequential([keras.Input((4,)), *model.layers, layer])
    model.save(tmp_path / "user.keras")
    base = [tmp_path / "user.keras", "--task", task, "--labels", labels, "--out", tmp_path / "models"]
    code, err = run_import(capsys, *base, "--output-kind", "logits")
    assert code == 2 and err.count("\n") == 1, err
    assert "--output-kind logits contradicts the model: the Keras layer (before layers that pass it through) " \
        f"'{model.layers[-2].name}' has activation '{last}'" in err, err
    assert run_import(capsys, *base)[0] == 0
    assert read_card(tmp_path / "models/user/1/card.json").output_kind.value == "probabilities"


def test_multiclass_logits_said_of_probabilities_are_refused_by_the_sample_rows(tmp_path, capsys):
    # A random forest's probabilities (a TreeEnsembleClassifier without post_transform, which says
    # nothing of its kind) taken as logits: setosa at 1.0 was served as 0.576.
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    x, y = load_iris(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    onx = to_onnx(forest, x[:1].astype(np.float32), options={id(forest): {"zipmap": False}})
    (tmp_path / "forest.onnx").write_bytes(onx.SerializeToString())
    np.save(tmp_path / "rows.npy", x[::15])
    base = [tmp_path / "forest.onnx", "--task", "multiclass", "--labels", "setosa,versicolor,virginica",
            "--output", "probabilities", "--samples", tmp_path / "rows.npy", "--out", tmp_path / "models"]
    code, err = run_import(capsys, *base, "--output-kind", "logits")
    assert code == 2 and err.count("\n") == 1, err
    assert "--output-kind logits, but every row of rows.npy lies in [0, 1] and sums to 1: those are " \
        "probabilities already" in err, err
    assert run_import(capsys, *base, "--output-kind", "probabilities")[0] == 0


def test_probabilities_said_of_a_linear_end_are_taken_once_the_rows_hold_them(tmp_path, capsys):
    # A score clipped into [0, 1] is found to be logits (a Clip after a MatMul): the option corrects it.
    tail = [helper.make_node("Clip", ["scores", "zero", "one"], ["out"])]
    onnx_graph(tmp_path / "graph.onnx", None, w=W[:, :1], b=B[:1], tail=tail, constants={"zero": 0.0, "one": 1.0})
    code, err = run_import(capsys, tmp_path / "graph.onnx", "--task", "binary", "--output-kind", "probabilities",
                           "--out", tmp_path / "models")
    assert code == 0, err
    assert read_card(tmp_path / "models/graph/1/card.json").output_kind.value == "probabilities"


def test_the_option_says_what_the_graph_does_not(tmp_path, capsys):
    onnx_graph(tmp_path / "graph.onnx", "LogSoftmax")
    assert run_import(capsys, tmp_path / "graph.onnx", "--task", "multiclass", "--output-kind", "logits",
                      "--out", tmp_path)[0] == 0
    card = read_card(tmp_path / "graph/1/card.json")
    assert card.output_kind.value == "logits" and card.source.output_kind_from == "--output-kind"


async def test_a_scikit_learn_classifier_serves_its_probabilities(tmp_path, capsys):
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    onx = to_onnx(clf, x[:1].astype(np.float32), options={id(clf): {"zipmap": False}})
    (tmp_path / "iris.onnx").write_bytes(onx.SerializeToString())
    (tmp_path / "labels.txt").write_text("setosa\nversicolor\nvirginica\n")
    base = ["--task", "multiclass", "--labels-file", tmp_path / "labels.txt", "--out", tmp_path / "models"]
    code, err = run_import(capsys, tmp_path / "iris.onnx", *base)
    assert code == 2 and "has outputs ['label', 'probabilities']; choose the one to serve with --output" in err
    assert not (tmp_path / "models").exists()
    assert run_import(capsys, tmp_path / "iris.onnx", *base, "--output", "probabilities")[0] == 0
    card = read_card(tmp_path / "models/iris/1/card.json")
    assert card.output_kind.value == "probabilities" and card.labels == ["setosa", "versicolor", "virginica"]
    rows = x[::10].astype(np.float32)
    got = await answers(tmp_path / "models", "iris", rows)
    expected = clf.predict_proba(rows)
    np.testing.assert_allclose(got["v2"]["probabilities"], expected, atol=1e-5)
    assert [p["label"] for p in got["predict"]] == [card.labels[i] for i in clf.predict(rows)]
    np.testing.assert_allclose([p["probability"] for p in got["predict"]], expected.max(axis=1), atol=1e-5)


def _two_inputs(path):
    extra = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    onnx_graph(path, None, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]), extra])


def _strings(path):
    onnx_graph(path, None, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])])
    import onnx
    model = onnx.load(str(path))
    model.graph.input[0].name = "text"
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.STRING
    model.graph.node.insert(0, helper.make_node("Cast", ["text"], ["x"], to=TensorProto.FLOAT))
    onnx.save(model, str(path))


def _dynamic_rank(path):
    onnx_graph(path, None, [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)])


UNSERVABLE = [(_two_inputs, "the graph has 2 inputs ['x', 'y']"),
              (_strings, "graph input 'text' takes strings"),
              (_dynamic_rank, "graph input 'x' has no fixed rank")]


@pytest.mark.parametrize("make,reason", UNSERVABLE)
async def test_unservable_graphs_are_refused_by_import_and_by_the_service(tmp_path, capsys, make, reason):
    make(tmp_path / "bad.onnx")
    code, err = run_import(capsys, tmp_path / "bad.onnx", "--task", "multiclass", "--out", tmp_path / "models")
    assert code == 2 and err.count("\n") == 1 and reason in err, err
    assert not (tmp_path / "models").exists()
    # The same graph put in place by hand, with a card: the service says why it does not serve.
    spec = helpers.Spec("bad", "multiclass", W.tolist(), B.tolist(), ["a", "b", "c"], output_name="out")
    folder = helpers.write_model(tmp_path / "repo", spec)
    (folder / "model.onnx").write_bytes((tmp_path / "bad.onnx").read_bytes())
    helpers.reseal(folder)
    async with helpers.serve(create_app(Settings(model_root=tmp_path / "repo", poll_seconds=0))) as client:
        (model,) = (await client.get("/models")).json()["models"]
    assert model["status"] == "failed" and reason in model["versions"][0]["reason"]


def _bad_inputs(tmp_path):
    onnx_graph(tmp_path / "graph.onnx", "Softmax")
    (tmp_path / "notes.onnx").write_text("these are not the weights you are looking for")
    (tmp_path / "notes.keras").write_text("nor these")
    (tmp_path / "notes.txt").write_text("a,b")
    (tmp_path / "blank.txt").write_text("\n  \n")
    (tmp_path / "narrow.csv").write_text("1,2\n3,4\n")
    graph = ["--task", "multiclass", "--labels"]
    return [
        ([tmp_path / "missing.onnx", "--task", "binary"], "no such file: "),
        ([tmp_path, "--task", "binary"], "is a directory; name the model file (.keras, .h5, .onnx)"),
        ([tmp_path / "notes.onnx", "--task", "binary"], "notes.onnx is not an ONNX model: "),
        ([tmp_path / "notes.keras", "--task", "binary"], "notes.keras is not a Keras file: a .keras file is a zip"),
        ([tmp_path / "notes.txt", "--task", "binary"], "not a model file this command reads"),
        ([tmp_path / "graph.onnx", *graph, "a,b"], "multiclass model with 3 outputs needs 3 labels, card has 2"),
        ([tmp_path / "graph.onnx", "--task", "multiclass", "--labels-file", tmp_path / "notes.txt"],
         "needs 3 labels, card has 1"),
        # A file of blank lines once gave the default labels 0, 1, 2, as though none were given.
        ([tmp_path / "graph.onnx", "--task", "multiclass", "--labels-file", tmp_path / "blank.txt"],
         f"labels file {tmp_path / 'blank.txt'} holds no label: write one a line"),
        ([tmp_path / "graph.onnx", "--task", "ranking"], "argument --task: invalid choice: 'ranking'"),
        ([tmp_path / "graph.onnx", "--task", "binary"], "a binary model serves one output column"),
        ([tmp_path / "graph.onnx", *graph, "a,b,c", "--thresholds", "0.5"], "thresholds apply to binary and multilabel models, not multiclass"),
        ([tmp_path / "graph.onnx", *graph, "a,b,c", "--output", "nope"], "the graph has no output 'nope'"),
        ([tmp_path / "graph.onnx", *graph, "a,b,c", "--samples", tmp_path / "narrow.csv"], "have 2 columns"),
        ([tmp_path / "graph.onnx", *graph, "a,b,c", "--name", "../up"], "model name '../up' must match"),
        ([tmp_path / "graph.onnx", *graph, "a,b,c", "--name", ""], "model name '' must match"),
    ]


def test_bad_input_ends_in_one_line_and_writes_nothing(tmp_path, capsys):
    for args, message in _bad_inputs(tmp_path):
        code, err = run_import(capsys, *args, "--out", tmp_path / "models")
        assert code != 0 and err.count("\n") == 1, (args, err)
        assert err.startswith("python -m training import: error: ") and message in err, (args, err)
        assert not (tmp_path / "models").exists(), args


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    onnx_graph(tmp_path / "graph.onnx", "Softmax")
    (tmp_path / "models").write_text("")
    code, err = run_import(capsys, tmp_path / "graph.onnx", "--task", "multiclass", "--out", tmp_path / "models")
    assert code == 2 and err == (f"python -m training import: error: --out {tmp_path / 'models'} is a file; "
                                 "it names the model repository, a directory\n"), err


def test_the_command_line_reports_without_a_traceback(tmp_path):
    (tmp_path / "notes.onnx").write_text("not a graph")
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as archive:  # a zip, so Keras (and TensorFlow) load
        archive.writestr("notes.txt", "no model here")
    for args in (["import", str(tmp_path / "notes.onnx"), "--task", "binary", "--out", str(tmp_path / "m")],
                 ["import", str(tmp_path / "none.keras"), "--task", "binary", "--out", str(tmp_path / "m")],
                 ["import", str(tmp_path / "empty.keras"), "--task", "binary", "--out", str(tmp_path / "m")]):
        result = run_cli(*args)
        lines = result.stderr.splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert lines[0].startswith("python -m training import: error: ")
    assert not (tmp_path / "m").exists()


async def test_csv_samples_name_the_features_and_versions_follow_on(tmp_path, capsys):
    model = keras_model("regressor")
    model.save(tmp_path / "reg.keras")
    header = "age,bmi,bp,s1"
    (tmp_path / "rows.csv").write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in ROWS.tolist()))
    args = [tmp_path / "reg.keras", "--task", "regression", "--samples", tmp_path / "rows.csv", "--out", tmp_path]
    assert run_import(capsys, *args)[0] == 0 and run_import(capsys, *args)[0] == 0
    card = read_card(tmp_path / "reg/2/card.json")
    assert card.feature_names == header.split(",") and card.version == 2 and card.labels == ["value_0", "value_1"]
    assert [g.input for g in card.golden] == ROWS[:5].tolist() and card.source.samples == "rows.csv"
    async with helpers.serve(create_app(Settings(model_root=tmp_path, poll_seconds=0))) as client:
        row = dict(zip(header.split(","), ROWS[0].tolist()))
        got = (await client.post("/models/reg/predict", json={"instances": [row]})).json()
    np.testing.assert_allclose(got["predictions"][0]["value"], model.predict(ROWS[:1], verbose=0)[0], atol=1e-5)


def test_feature_names_and_a_samples_header_must_agree(tmp_path, capsys):
    onnx_graph(tmp_path / "graph.onnx", "Softmax")
    (tmp_path / "rows.csv").write_text("age, bmi ,bp,s1\n" + "\n".join(",".join(map(str, r)) for r in ROWS.tolist()))
    base = [tmp_path / "graph.onnx", "--task", "multiclass", "--samples", tmp_path / "rows.csv", "--out", tmp_path / "m"]
    code, err = run_import(capsys, *base, "--feature-names", "age,bmi,bp,s2")
    assert code == 2 and err.count("\n") == 1, err
    assert "--feature-names age,bmi,bp,s2 differ from the header of rows.csv (age,bmi,bp,s1): leave one out or " \
        "make them agree" in err, err
    assert not (tmp_path / "m").exists()
    assert run_import(capsys, *base, "--feature-names", "age, bmi,bp,s1")[0] == 0
    assert read_card(tmp_path / "m/graph/1/card.json").feature_names == ["age", "bmi", "bp", "s1"]
    assert run_import(capsys, *base)[0] == 0  # the header alone, its spaces dropped
    assert read_card(tmp_path / "m/graph/2/card.json").feature_names == ["age", "bmi", "bp", "s1"]
    # a spreadsheet's CSV begins with a byte-order mark: not part of the first name
    (tmp_path / "rows.csv").write_text((tmp_path / "rows.csv").read_text(), encoding="utf-8-sig")
    assert run_import(capsys, *base, "--feature-names", "age,bmi,bp,s1")[0] == 0
    assert read_card(tmp_path / "m/graph/3/card.json").feature_names == ["age", "bmi", "bp", "s1"]


@pytest.mark.parametrize("output", ["label", "output_label", "output_probability"])
def test_an_output_that_cannot_serve_is_told_so_before_its_kind_is_asked(tmp_path, capsys, output):
    # scikit-learn's label (int64 [batch]) and ZipMap'd probabilities (a sequence of maps): no
    # --output-kind would make them serve, so the import says what is wrong with them instead.
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    options = {id(clf): {"zipmap": False}} if output == "label" else None
    (tmp_path / "iris.onnx").write_bytes(to_onnx(clf, x[:1].astype(np.float32), options=options).SerializeToString())
    code, err = run_import(capsys, tmp_path / "iris.onnx", "--task", "multiclass", "--output", output,
                           "--out", tmp_path / "m")
    assert code == 2 and err.count("\n") == 1, err
    assert f"iris.onnx cannot serve: graph output {output!r} is " in err and "--output-kind" not in err, err
    assert "a served output is float32 or float64 [batch, n_outputs]" in err, err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("entry", ["service.cli", "training.__main__"])
def test_an_onnx_import_never_loads_tensorflow(tmp_path, entry):
    onnx_graph(tmp_path / "graph.onnx", None)
    code = (f"import sys; from {entry} import main; status = main(sys.argv[1:]); "
            "print(sorted({'tensorflow', 'keras', 'tf2onnx', 'sklearn'} & set(sys.modules))); sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code, "import", str(tmp_path / "graph.onnx"), "--task", "multiclass",
                           "--labels", "a,b,c", "--output-kind", "logits", "--out", str(tmp_path / "models")],
                          cwd=helpers.REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr  # no absl / oneDNN start-up lines
    imported, loaded = done.stdout.splitlines()
    assert imported.startswith("imported graph.onnx as graph version 1") and loaded == "[]"


def test_onnxruntime_notes_on_the_graph_are_not_printed(tmp_path, capfd):
    # The unused constant "eps": onnxruntime says at warning level that it removes it.
    onnx_graph(tmp_path / "graph.onnx", "Softmax", tail=[helper.make_node("Identity", ["last"], ["out"])])
    assert main([str(tmp_path / "graph.onnx"), "--task", "multiclass", "--out", str(tmp_path / "m")]) == 0
    out, err = capfd.readouterr()
    assert out.startswith("imported graph.onnx") and err == "", err


@pytest.mark.parametrize("task,suffix,labels", [("binary", ".keras", "stay,stay"), ("multiclass", ".onnx", "a,b,a"),
                                                ("multilabel", ".onnx", "a,b,a"), ("regression", ".onnx", "y,y,y")])
def test_a_model_with_a_label_twice_is_refused(tmp_path, capsys, task, suffix, labels):
    if suffix == ".keras":
        keras_model("sigmoid").save(tmp_path / f"model{suffix}")
    else:
        onnx_graph(tmp_path / f"model{suffix}", {"multiclass": "Softmax", "multilabel": "Sigmoid"}.get(task))
    code, err = run_import(capsys, tmp_path / f"model{suffix}", "--task", task, "--labels", labels,
                           "--out", tmp_path / "models")
    assert code == 2 and err.count("\n") == 1, err
    assert f"error: a {task} model's labels must be unique, got {labels.split(',')}" in err
    assert not (tmp_path / "models").exists()


def log_graph(path) -> None:
    """log(x @ (|W| + 0.5)): finite for rows of positive numbers, NaN where a row's sum is negative."""
    weights = numpy_helper.from_array(np.abs(W) + 0.5, "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Log", ["xw"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3])],
                              initializer=[weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.write_bytes(model.SerializeToString())


def test_outputs_that_are_not_finite_on_the_sample_rows_are_refused_plainly(tmp_path, capsys):
    log_graph(tmp_path / "log.onnx")
    base = [tmp_path / "log.onnx", "--task", "regression", "--out", tmp_path / "models"]
    code, err = run_import(capsys, *base)  # 5 random rows from a standard normal: 3 have negative sums
    assert code == 2 and err.count("\n") == 1, err
    assert "the model's output is not finite (NaN or inf) on 3 of the 5 random sample rows" in err, err
    assert "pass rows of its own data with --samples FILE" in err and "card.json" not in err, err
    assert not (tmp_path / "models").exists()
    rows = np.abs(ROWS) + 0.1
    rows[2] = -1.0
    np.save(tmp_path / "rows.npy", rows)
    code, err = run_import(capsys, *base, "--samples", tmp_path / "rows.npy")
    assert code == 2 and "not finite (NaN or inf) on row(s) [2] of rows.npy (counted from 0" in err and "--samples" in err, err
    np.save(tmp_path / "rows.npy", np.abs(ROWS) + 0.1)  # rows it answers: the import goes through
    code, err = run_import(capsys, *base, "--samples", tmp_path / "rows.npy")
    assert code == 0, err


def functional_models():
    """Keras models whose output no single layer call makes: a keras.ops call, arithmetic, a layer called twice."""
    import keras

    keras.utils.set_random_seed(0)
    i = keras.Input((4,))
    twice = keras.layers.Dense(4, activation="tanh")
    return {"ops-softmax": (keras.Model(i, keras.ops.softmax(keras.layers.Dense(3)(i))), "probabilities"),
            "times-one": (keras.Model(i, keras.layers.Dense(3)(i) * 1.0), "logits"),
            "called-twice": (keras.Model(i, twice(twice(i))), "logits")}


@pytest.mark.parametrize("which", ["ops-softmax", "times-one", "called-twice"])
def test_a_keras_output_no_layer_makes_needs_the_output_kind(tmp_path, capsys, which):
    model, kind = functional_models()[which]
    model.save(tmp_path / f"{which}.keras")
    base = [tmp_path / f"{which}.keras", "--task", "multiclass", "--out", tmp_path / "models"]
    code, err = run_import(capsys, *base)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert ("cannot tell whether the output holds logits or probabilities (the model's output is not the output of "
            "one Keras layer); say which with --output-kind") in err, err
    code, err = run_import(capsys, *base, "--output-kind", kind)
    assert code == 0, err
    card = read_card(tmp_path / f"models/{which}/1/card.json")
    assert card.output_kind.value == kind and card.parity.passed


def _tail(*nodes):
    return [helper.make_node(op, inputs, [out]) for op, inputs, out in nodes]


AFTER = "node's output, which may no longer hold probabilities"


@pytest.mark.parametrize("last,tail,kind,why", [
    ("Softmax", _tail(("Add", ["last", "eps"], "out")), None, f"from an Add node applied to a Softmax {AFTER}"),
    ("Sigmoid", _tail(("Mul", ["last", "eps"], "t"), ("Identity", ["t"], "out")), None,
     f"from a Mul node applied to a Sigmoid {AFTER}"),
    ("Softmax", _tail(("Clip", ["last"], "out")), None, f"from a Clip node applied to a Softmax {AFTER}"),
    (None, _tail(("Div", ["scores", "eps"], "out")), "logits", "from a Div node applied to a MatMul node's output"),
    (None, _tail(("Relu", ["scores"], "out")), None, "from a Relu node"),
])
def test_arithmetic_after_a_softmax_or_sigmoid_leaves_the_kind_to_the_user(tmp_path, capsys, last, tail, kind, why):
    onnx_graph(tmp_path / "graph.onnx", last, tail=tail)
    base = [tmp_path / "graph.onnx", "--task", "multiclass", "--out", tmp_path / "models"]
    code, err = run_import(capsys, *base)
    if kind is None:
        assert code == 2 and f"cannot tell whether the output holds logits or probabilities (output 'out' comes {why})" \
            in err, err
        return
    assert code == 0, err
    card = read_card(tmp_path / "models/graph/1/card.json")
    assert card.output_kind.value == kind and why in card.source.output_kind_from, card.source


@pytest.mark.parametrize("op,axis,opset,refused", [
    ("Softmax", 0, 17, True), ("LogSoftmax", 0, 17, True), ("Softmax", -2, 17, True), ("Softmax", 0, 11, True),
    ("Softmax", -2, 11, True), ("Softmax", None, 11, False), ("Softmax", 1, 17, False), ("Softmax", -1, 17, False),
])
def test_a_softmax_over_the_batch_axis_is_refused(tmp_path, capsys, op, axis, opset, refused):
    # The server batches concurrent requests: one row's answer must not depend on the others'. The
    # service's own load check says so (a golden row alone against the same row with the others).
    attrs = {} if axis is None else {"axis": axis}
    # `eps` added after it: the output may or may not hold probabilities, so the option decides
    tail = [helper.make_node(op, ["scores"], ["soft"], **attrs), helper.make_node("Add", ["soft", "eps"], ["out"])]
    onnx_graph(tmp_path / "graph.onnx", None, tail=tail, opset=opset)
    code, err = run_import(capsys, tmp_path / "graph.onnx", "--task", "multiclass", "--output-kind", "logits",
                           "--out", tmp_path / "models")
    if not refused:
        assert code == 0, err
        return
    assert code == 2 and err.count("\n") == 1, err
    assert "the imported model would not serve: golden example 4 gives other outputs alone than with the other " \
        "examples" in err and "a row's answer must not depend on the rows batched with it" in err, err
    assert not (tmp_path / "models").exists()


def test_a_per_row_softmax_written_with_transposes_is_served(tmp_path, capsys):
    # Transpose, Softmax over axis 0, Transpose back: each row normalised on its own.
    tail = [helper.make_node("Transpose", ["scores"], ["t"], perm=[1, 0]),
            helper.make_node("Softmax", ["t"], ["s"], axis=0), helper.make_node("Transpose", ["s"], ["out"], perm=[1, 0])]
    onnx_graph(tmp_path / "graph.onnx", None, tail=tail)
    code, err = run_import(capsys, tmp_path / "graph.onnx", "--task", "multiclass", "--output-kind", "probabilities",
                           "--out", tmp_path / "models")
    assert code == 0, err


@pytest.mark.parametrize("last,task,option,message", [
    (None, "multiclass", "probabilities",
     "--output-kind probabilities, but row 0 of the random sample rows holds 1.4 (probabilities lie in [0, 1]); "
     "if they are logits say --output-kind logits"),
    (None, "multilabel", "probabilities", "row 0 of the random sample rows holds 1.4 (probabilities lie in [0, 1])"),
    ("Sigmoid", "multiclass", None,
     "the output was taken to hold probabilities (output 'out' comes from a Sigmoid node), but rows do not sum to 1 "
     "(row 0 of the random sample rows sums to 1.537): a multiclass model's probabilities come from a softmax; "
     "per-label sigmoids are --task multilabel"),
])
def test_an_output_that_does_not_hold_probabilities_is_not_served_as_them(tmp_path, capsys, last, task, option,
                                                                           message):
    # Without a last node, a Relu: the graph does not say what its output holds, so the option may.
    onnx_graph(tmp_path / "graph.onnx", last, tail=[] if last else [helper.make_node("Relu", ["scores"], ["out"])])
    code, err = run_import(capsys, tmp_path / "graph.onnx", "--task", task, *(["--output-kind", option] if option else []),
                           "--out", tmp_path / "models")
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("option", [[], ["--output-kind", "probabilities"]])
def test_a_softmax_is_not_served_as_multilabel(tmp_path, capsys, option):
    # Its rows sum to 1: most would reach no label's threshold. (Sigmoids that happen to sum to 1
    # are multilabel: the end node decides, not the sums.)
    onnx_graph(tmp_path / "graph.onnx", "Softmax")
    code, err = run_import(capsys, tmp_path / "graph.onnx", "--task", "multilabel", *option,
                           "--out", tmp_path / "models")
    assert code == 2 and err.count("\n") == 1, err
    assert "output 'out' comes from a Softmax node, whose outputs sum to 1 on every row (one class per row): " \
        "import it with --task multiclass" in err, err


def test_a_keras_softmax_is_not_served_as_multilabel(tmp_path, capsys):
    keras_model("softmax").save(tmp_path / "user.keras")
    code, err = run_import(capsys, tmp_path / "user.keras", "--task", "multilabel", "--out", tmp_path / "models")
    assert code == 2 and "has activation 'softmax', whose outputs sum to 1 on every row" in err, err


def test_complementary_sigmoids_are_multilabel(tmp_path, capsys):
    w, b = W[:, :1], B[:1]
    onnx_graph(tmp_path / "graph.onnx", "Sigmoid", w=np.hstack([w, -w]), b=np.r_[b, -b])
    assert run_import(capsys, tmp_path / "graph.onnx", "--task", "multilabel", "--out", tmp_path / "models")[0] == 0


def test_probabilities_are_checked_on_the_sample_rows_given(tmp_path, capsys):
    onnx_graph(tmp_path / "graph.onnx", "Sigmoid")
    np.save(tmp_path / "rows.npy", ROWS)
    base = [tmp_path / "graph.onnx", "--samples", tmp_path / "rows.npy", "--out", tmp_path / "models"]
    code, err = run_import(capsys, *base, "--task", "multiclass")
    assert code == 2 and "rows do not sum to 1 (row 0 of rows.npy sums to" in err, err
    assert run_import(capsys, *base, "--task", "multilabel")[0] == 0  # per-label sigmoids


def test_an_output_folder_that_cannot_be_written_is_one_line_before_the_conversion(tmp_path, capsys):
    onnx_graph(tmp_path / "graph.onnx", "Softmax")
    (tmp_path / "file").write_text("")
    code, err = run_import(capsys, tmp_path / "graph.onnx", "--task", "multiclass", "--out", tmp_path / "file" / "m")
    assert code == 2 and err == ("python -m training import: error: cannot write to output folder "
                                 f"{tmp_path / 'file' / 'm'}: Not a directory\n"), err
    code, err = run_import(capsys, tmp_path / "graph.onnx", "--task", "multiclass", "--output-kind", "logits",
                           "--out", tmp_path / "new" / "m")
    assert code == 2 and not (tmp_path / "new").exists()  # refused later: the check left no folder behind


def test_a_version_the_server_would_not_serve_is_refused(tmp_path, capsys):
    onnx_graph(tmp_path / "graph.onnx", "Softmax")
    base = [tmp_path / "graph.onnx", "--task", "multiclass", "--out", tmp_path / "models"]
    for version in ("9999999999", "1000000000", "0", "-3"):
        code, err = run_import(capsys, *base, "--version", version)
        assert code == 2 and err == ("python -m training import: error: --version must be 1 to 999999999 (the "
                                     f"version folders the server serves), got {version}\n"), err
    assert not (tmp_path / "models").exists()
    assert run_import(capsys, *base, "--version", "999999999")[0] == 0
    code, err = run_import(capsys, *base)  # nothing the server serves can follow it
    assert code == 1 and "has version 999999999, the highest the server serves" in err, err


def test_the_next_version_follows_the_served_folders_only(tmp_path, capsys):
    onnx_graph(tmp_path / "graph.onnx", "Softmax")
    for folder in ("2", "0123", "1234567890", "00"):
        (tmp_path / "models/graph" / folder).mkdir(parents=True)
    code, err = run_import(capsys, tmp_path / "graph.onnx", "--task", "multiclass", "--out", tmp_path / "models")
    assert code == 0 and (tmp_path / "models/graph/3/card.json").is_file(), err


def test_outside_a_checkout_import_writes_where_training_does():
    # A wheel install has no checkout: the default must not be a folder inside site-packages.
    code = ("import service.config as c; c.CHECKOUT = None; from training.importer import build_parser; "
            "from training.__main__ import build_parser as train; "
            "print(build_parser().parse_args(['m.onnx', '--task', 'binary']).out); "
            "print(train().parse_args(['--all']).out); print(build_parser().format_help())")
    done = subprocess.run([sys.executable, "-c", code], cwd=helpers.REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    imported, trained, usage = done.stdout.split("\n", 2)
    assert imported == trained == "models", done.stdout
    assert "in a checkout, else ./models" in " ".join(usage.split()), usage


def test_the_summary_line_counts_in_the_singular_too(tmp_path, capsys):
    onnx_graph(tmp_path / "one.onnx", "Sigmoid", w=W[:1, :1], b=B[:1])
    assert main([str(tmp_path / "one.onnx"), "--task", "binary", "--out", str(tmp_path / "models")]) == 0
    assert "(binary, 1 feature, 1 output of probabilities)" in capsys.readouterr().out


def test_an_adapted_normalization_layer_is_explained(tmp_path, capsys):
    import keras

    norm = keras.layers.Normalization()
    norm.adapt(ROWS)
    keras.Sequential([keras.Input((4,)), norm, keras.layers.Dense(3)]).save(tmp_path / "norm.keras")
    code, err = run_import(capsys, tmp_path / "norm.keras", "--task", "multiclass", "--output-kind", "logits",
                           "--out", tmp_path / "models")
    assert code == 2 and err.count("\n") == 1, err
    assert "exported graph must have exactly one input, it has ['features', " in err
    assert "an adapted keras.layers.Normalization exports its statistics as extra graph inputs; bake them into the " \
        "model (e.g. a Rescaling layer) or normalise outside it" in err, err


def test_a_bias_added_to_an_einsum_is_logits():
    from service.card import OutputKind
    from training.output_kind import onnx_kind

    nodes = [helper.make_node("Einsum", ["x", "W"], ["xw"], equation="bi,ij->bj"),
             helper.make_node("Add", ["xw", "B"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3])],
                              initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")])
    found = onnx_kind(graph, "out")
    assert found.kind is OutputKind.logits and not found.one_class
    assert found.how == "output 'out' comes from an Add node applied to an Einsum node's output"


def test_keras_kind_looks_past_pass_through_layers_of_a_sequential_model_as_given():
    # A Sequential model's config names no inbound layers: only the functional wrapping the import
    # makes was seen through.
    import keras

    from training.output_kind import keras_kind

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax"), keras.layers.Dropout(0.1)])
    found = keras_kind(model)
    assert found.kind.value == "probabilities" and found.one_class
