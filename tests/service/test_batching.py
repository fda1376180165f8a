"""Adaptive batching: concurrent submits share one run and each gets exactly its own rows back."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from functools import partial

from service import runtime
from service.batching import LONE, Batcher
from service.batching import rows as output_rows


class Recorder:
    """A fake model: output row = input row * 2; records the batch sizes it ran."""

    def __init__(self, fail_when: float | None = None):
        self.batches: list[int] = []
        self.fail_when = fail_when

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(len(x))
        if self.fail_when is not None and (x == self.fail_when).any():
            raise RuntimeError("model failed")
        return x * 2


def rows(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.float32).reshape(count, 1)


def record_runs(batcher: Batcher) -> list[int]:
    """Wrap a live batcher's model call: the returned list gets the row count of every run it makes
    (a run of more rows than any one request proves requests were run together)."""
    runs: list[int] = []
    run = batcher.run

    def recording(x: np.ndarray) -> np.ndarray:
        runs.append(len(x))
        return run(x)

    batcher.run = recording
    return runs


def test_concurrent_submits_get_their_own_rows():
    model = Recorder()

    async def main():
        batcher = Batcher(model, max_size=1000, max_delay=0.01)
        inputs = [rows(100 * i, i + 1) for i in range(20)]
        outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        return inputs, outputs

    inputs, outputs = asyncio.run(main())
    for x, y in zip(inputs, outputs):
        np.testing.assert_array_equal(y, x * 2)
    assert model.batches == [sum(range(1, 21))]  # one run for all of them


def test_max_size_splits_batches_and_large_requests_run_alone():
    model = Recorder()

    async def main():
        batcher = Batcher(model, max_size=4, max_delay=10.0)  # the size, not the delay, must flush
        return await asyncio.gather(*(batcher.submit(rows(10 * i, n)) for i, n in enumerate([1, 2, 1, 3, 9])))

    outputs = asyncio.run(main())
    assert [len(y) for y in outputs] == [1, 2, 1, 3, 9]
    assert model.batches == [4, 3, 9]
    assert all(b <= 4 for b in model.batches[:-1])


def test_delay_bound_respected():
    model = Recorder()

    async def main():
        batcher = Batcher(model, max_size=64, max_delay=0.02)
        start = time.perf_counter()
        await batcher.submit(rows(0, 1))  # alone: runs when its delay is up, not later
        return time.perf_counter() - start

    waited = asyncio.run(main())
    assert 0.015 <= waited < 0.5  # generous upper bound: CI machines are noisy
    assert model.batches == [1]


def test_model_failure_reaches_every_request_of_that_batch_only():
    model = Recorder(fail_when=-1.0)

    async def main():
        batcher = Batcher(model, max_size=100, max_delay=0.005)
        first = await asyncio.gather(batcher.submit(rows(0, 2)), batcher.submit(np.array([[-1.0]], np.float32)),
                                     return_exceptions=True)
        second = await batcher.submit(rows(5, 2))
        return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in first)
    np.testing.assert_array_equal(second, rows(5, 2) * 2)


def test_cancelled_request_does_not_disturb_the_others():
    model = Recorder()

    async def main():
        batcher = Batcher(model, max_size=100, max_delay=0.01)
        gone = asyncio.ensure_future(batcher.submit(rows(0, 1)))
        kept = asyncio.ensure_future(batcher.submit(rows(7, 3)))
        await asyncio.sleep(0)
        gone.cancel()
        return await kept

    np.testing.assert_array_equal(asyncio.run(main()), rows(7, 3) * 2)


def test_delay_zero_leader_cancelled_during_its_yield_still_runs_the_others():
    # With delay 0 the first request yields (once, when nobody else joins) and then runs the batch;
    # cancelled while it yields (client gone, deadline), it must still run it for those that joined.
    model = Recorder()

    async def main():
        batcher = Batcher(model, max_size=100, max_delay=0.0)
        leader = asyncio.ensure_future(batcher.submit(rows(0, 1)))
        follower = asyncio.ensure_future(batcher.submit(rows(7, 3)))
        await asyncio.sleep(0)  # the leader yields with its rows waiting, the follower joins them
        assert not leader.done() and not follower.done()
        leader.cancel()  # before the leader resumes to run the batch
        out = await asyncio.wait_for(follower, 1.0)
        return out, leader

    out, leader = asyncio.run(main())
    np.testing.assert_array_equal(out, rows(7, 3) * 2)
    assert leader.cancelled()
    assert model.batches == [4]


def test_serving_json(tmp_path):
    assert runtime.serving_options(tmp_path / "serving.json") == {}
    (tmp_path / "serving.json").write_text(json.dumps({"batch_max_size": 32, "batch_max_delay_ms": 1.5}))
    assert runtime.serving_options(tmp_path / "serving.json") == {"batch_max_size": 32, "batch_max_delay_ms": 1.5}
    for bad in ('{"batch_max_size": -1}', '{"batch_max_size": true}', '{"other": 1}', "[1]", "{",
                '{"batch_max_delay_ms": Infinity}', '{"batch_max_delay_ms": NaN}', '{"batch_max_delay_ms": -0.5}'):
        (tmp_path / "serving.json").write_text(bad)
        with pytest.raises(ValueError, match="serving.json"):
            runtime.serving_options(tmp_path / "serving.json")


class FakeSession:
    """What `LoadedModel.run` calls: run(names, feed, options) -> [output]."""

    def __init__(self):
        self.recorder = Recorder()

    def run(self, names, feed, options):
        return [self.recorder(next(iter(feed.values())))]


@pytest.mark.parametrize("serving, defaults, batched", [
    ({}, (0, 2.0), False),  # off from the settings
    ({}, (8, 2.0), True),  # on from the settings
    ({"batch_max_size": 0}, (8, 2.0), False),  # serving.json turns it off for one model
    ({"batch_max_size": 8, "batch_max_delay_ms": 1}, (0, 2.0), True),  # ... or on
])
def test_batcher_follows_settings_and_serving_json(serving, defaults, batched):
    spec = runtime.TensorSpec(name="x", shape=[-1, 1])
    session = FakeSession()
    model = runtime.LoadedModel(None, session, spec, spec, serving, defaults)  # the batcher is made here

    async def run(x):  # as service.dataplane.run does
        return model.run(x) if model.batcher is None else await model.batcher.submit(x)

    async def main():
        return await asyncio.gather(*(run(rows(i, 1)) for i in range(3)))

    outputs = asyncio.run(main())
    assert [y.item() for y in outputs] == [0.0, 2.0, 4.0]
    assert session.recorder.batches == ([3] if batched else [1, 1, 1])
    assert (model.batcher is not None) is batched


@pytest.mark.anyio
async def test_batched_app_answers_each_request_and_isolates_a_bad_one(model_root):
    """Through HTTP with batching on: concurrent requests get their own answers, a bad one its 400."""
    from service.config import Settings
    from service.main import create_app
    from tests.service import helpers

    app = create_app(Settings(model_root=model_root, batch_max_size=64, batch_max_delay_ms=20))
    spec = helpers.MULTICLASS_V2
    good = [[float(i), float(-i)][:spec.n_features] + [0.0] * (spec.n_features - 2) for i in range(12)]
    async with helpers.serve(app) as client:
        async def ask(row):
            return await client.post("/predict", json={"model": spec.name, "instances": [row]})

        batcher = app.state.repository.get(spec.name).batcher
        assert batcher.max_size == 64
        runs = record_runs(batcher)
        answers = await asyncio.gather(*(ask(row) for row in good), ask(["x"] * spec.n_features))
    *oks, bad = answers
    # Every request has one row: a run of several rows is requests run together; the bad row never ran.
    assert max(runs) > 1 and sum(runs) == len(good), runs
    assert bad.status_code == 400 and "is not a number" in bad.json()["error"]
    expected = spec.logits(good).argmax(axis=1).tolist()
    labels = [r.json()["predictions"][0]["label"] for r in oks]
    assert [spec.labels[i] for i in expected] == labels


def test_zero_delay_batches_what_waits_and_never_holds_a_lone_request():
    model = Recorder()

    async def main():
        batcher = Batcher(model, max_size=64, max_delay=0.0)
        together = await asyncio.gather(batcher.submit(rows(0, 1)), batcher.submit(rows(1, 2)))
        start = time.perf_counter()
        alone = await batcher.submit(rows(9, 1))
        return together, alone, time.perf_counter() - start

    together, alone, waited = asyncio.run(main())
    assert model.batches == [3, 1]
    np.testing.assert_array_equal(together[1], rows(1, 2) * 2)
    np.testing.assert_array_equal(alone, rows(9, 1) * 2)
    assert waited < 0.5  # no timer to wait for (generous bound: CI machines are noisy)


def test_delay_zero_stops_yielding_for_lone_requests_and_resumes_under_concurrency():
    from service import batching
    model = Recorder()
    yields = 0
    real_sleep = asyncio.sleep

    async def counting_sleep(delay, *args):
        nonlocal yields
        yields += delay == 0
        return await real_sleep(delay, *args)

    async def main():
        batcher = Batcher(model, max_size=64, max_delay=0.0)
        for i in range(batching.LONE + 2 * batching.PROBE):  # one at a time
            np.testing.assert_array_equal(await batcher.submit(rows(i, 1)), rows(i, 1) * 2)
        lone_yields = yields
        # Concurrent requests (5 at a time, so a probe is not always the last of its turn): a probe
        # catches several, and batching is back on for good.
        for round_ in range(3 * batching.PROBE):
            outs = await asyncio.gather(*(batcher.submit(rows(10 * k, 1)) for k in range(5)))
            for k, y in enumerate(outs):
                np.testing.assert_array_equal(y, rows(10 * k, 1) * 2)
        return lone_yields

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(asyncio, "sleep", counting_sleep)
        lone_yields = asyncio.run(main())
    # Lone requests: a yield each for the first LONE, then only one per PROBE.
    assert lone_yields == batching.LONE + 2
    assert model.batches[:batching.LONE + 2 * batching.PROBE] == [1] * (batching.LONE + 2 * batching.PROBE)
    assert model.batches[-10:] == [5] * 10  # the last rounds ran as one batch each


class Post:
    """A row-wise answer that records how many rows each call got: row -> (row * 10, tag)."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, tag: str, out: np.ndarray, as_dict: bool = False):
        self.calls.append(len(out))
        if tag == "fail":
            raise ValueError("answer failed")
        if as_dict:
            return {"scaled": out * 10, "tag": np.array([tag] * len(out), dtype=object)}
        return [(float(v), tag) for v in (out * 10).ravel()]


def test_post_runs_once_per_batch_and_each_request_gets_its_own_rows():
    model, post = Recorder(), Post()

    async def main():
        batcher = Batcher(model, max_size=100, max_delay=0.01)
        return await asyncio.gather(*(batcher.submit(rows(10 * i, i + 1), partial(post, "a")) for i in range(4)))

    answers = asyncio.run(main())
    assert model.batches == [10] and post.calls == [10]  # one run, one answer call over all 10 rows
    for i, got in enumerate(answers):
        assert got == [(float(v), "a") for v in (rows(10 * i, i + 1) * 20).ravel()]


def test_requests_asking_differently_are_answered_in_groups():
    model, post = Recorder(), Post()

    async def main():
        batcher = Batcher(model, max_size=100, max_delay=0.01)
        asks = [(rows(0, 2), partial(post, "a")), (rows(10, 1), partial(post, "b", as_dict=True)), (rows(20, 3), partial(post, "a")),
                (rows(30, 1), output_rows), (rows(40, 2), partial(post, "b", as_dict=True))]
        return await asyncio.gather(*(batcher.submit(x, p) for x, p in asks))

    a0, b0, a1, raw, b1 = asyncio.run(main())
    assert model.batches == [9]  # still one run
    assert sorted(post.calls) == [3, 5]  # "a" over its 5 rows, "b" (dict answers) over its 3
    assert a0 == [(0.0, "a"), (20.0, "a")] and a1 == [(400.0, "a"), (420.0, "a"), (440.0, "a")]
    np.testing.assert_array_equal(raw, rows(30, 1) * 2)
    np.testing.assert_array_equal(b0["scaled"], rows(10, 1) * 20)
    np.testing.assert_array_equal(b1["scaled"], rows(40, 2) * 20)
    assert b0["tag"].tolist() == ["b"] and b1["tag"].tolist() == ["b", "b"]


def test_a_failing_answer_fails_only_its_group():
    model, post = Recorder(), Post()

    async def main():
        batcher = Batcher(model, max_size=100, max_delay=0.01)
        return await asyncio.gather(batcher.submit(rows(0, 1), partial(post, "fail")), batcher.submit(rows(5, 1), partial(post, "a")),
                                    batcher.submit(rows(7, 2), partial(post, "fail")), return_exceptions=True)

    bad, good, bad2 = asyncio.run(main())
    assert isinstance(bad, ValueError) and isinstance(bad2, ValueError)
    assert good == [(100.0, "a")]


def test_lone_requests_run_straight_with_their_answer():
    model, post = Recorder(), Post()

    async def main():
        batcher = Batcher(model, max_size=64, max_delay=0.0)
        return [await batcher.submit(rows(i, 1), partial(post, "a")) for i in range(LONE + 3)]

    answers = asyncio.run(main())
    assert answers == [[(20.0 * i, "a")] for i in range(LONE + 3)]
    assert post.calls == [1] * (LONE + 3)


@pytest.mark.anyio
async def test_every_protocol_answers_the_same_batched_or_alone(model_root):
    """Concurrent /predict (three top_k, rows and columns), V2 (all outputs, one output, an unknown one) and TF Serving
    requests for one model share batches; each answer equals the one it gets with batching off."""
    from service.config import Settings
    from service.main import create_app
    from tests.service import helpers

    spec = helpers.MULTICLASS_V2
    row = lambda i: [float(i % 5) - 2.0, float(i % 3)][:spec.n_features] + [0.5] * (spec.n_features - 2)  # noqa: E731
    v2 = lambda i, **extra: {"inputs": [{"name": spec.input_name, "shape": [1, spec.n_features],  # noqa: E731
                                         "datatype": "FP32", "data": row(i)}], **extra}
    asks = []
    for i in range(6):
        asks += [("/predict", {"model": spec.name, "instances": [row(i)]}),
                 ("/predict", {"model": spec.name, "instances": [row(i), row(i + 1)], "top_k": 1}),
                 ("/predict", {"model": spec.name, "instances": [row(i + 2)], "top_k": 0}),
                 ("/predict", {"model": spec.name, "instances": [row(i), row(i + 3)], "format": "columns"}),
                 ("/predict", {"model": spec.name, "instances": [row(i + 1)], "top_k": 0, "format": "columns"}),
                 (f"/v2/models/{spec.name}/infer", v2(i)),
                 (f"/v2/models/{spec.name}/infer", v2(i, outputs=[{"name": "labels"}])),
                 (f"/v1/models/{spec.name}:predict", {"instances": [row(i)]})]
    asks.append((f"/v2/models/{spec.name}/infer", v2(0, outputs=[{"name": "nope"}])))

    async def answers(batch_max_size: int):
        app = create_app(Settings(model_root=model_root, batch_max_size=batch_max_size, batch_max_delay_ms=20))
        async with helpers.serve(app) as client:
            batcher = app.state.repository.get(spec.name).batcher
            runs = record_runs(batcher) if batcher else []
            got = await asyncio.gather(*(client.post(path, json=body) for path, body in asks))
            return [(r.status_code, r.json()) for r in got], batcher, runs

    batched, batcher, runs = await answers(64)
    alone, none, _ = await answers(0)
    assert batcher is not None and none is None
    # No request has more than 2 rows: a larger run is requests of the mixed protocols run together.
    biggest = max(len(body["instances"]) if "instances" in body else body["inputs"][0]["shape"][0] for _, body in asks)
    assert biggest == 2 and max(runs) > biggest and sum(runs) == sum(
        len(body["instances"]) if "instances" in body else 1 for _, body in asks), runs
    assert batched == alone
    assert batched[-1][0] == 400 and "unknown output" in batched[-1][1]["error"]
    assert all(status == 200 for status, _ in batched[:-1])


def test_zero_delay_batch_keeps_waiting_while_requests_keep_joining():
    # A request that arrives while the leader waits for its next turn still joins, because the
    # previous turn brought a request too; the turn that brings nobody ends the wait.
    model = Recorder()

    async def main():
        batcher = Batcher(model, max_size=64, max_delay=0.0)
        first = asyncio.ensure_future(batcher.submit(rows(0, 1)))  # the leader
        second = asyncio.ensure_future(batcher.submit(rows(1, 1)))  # joins during the leader's first turn
        await asyncio.sleep(0)  # the leader has yielded, the second has joined
        third = asyncio.ensure_future(batcher.submit(rows(2, 2)))  # arrives during its second turn
        return await asyncio.gather(first, second, third)

    out = asyncio.run(main())
    assert model.batches == [4]  # one batch (a single yield would have run [2, 2])
    for got, x in zip(out, (rows(0, 1), rows(1, 1), rows(2, 2))):
        np.testing.assert_array_equal(got, x * 2)


SHARED_POST = Post()


@pytest.mark.parametrize("posts", [
    [partial(lambda first, rows: 42, None)] * 2,  # an answer `take` cannot slice
    [partial(SHARED_POST, np.array([1, 2])), partial(SHARED_POST, np.array([1, 2]))],  # posts whose comparison raises
])
def test_a_batch_whose_answers_cannot_be_handed_out_fails_instead_of_hanging(posts):
    model = Recorder()

    async def main():
        batcher = Batcher(model, max_size=100, max_delay=0.01)
        return await asyncio.wait_for(asyncio.gather(*(batcher.submit(rows(i, 1), p) for i, p in enumerate(posts)),
                                                     return_exceptions=True), 2.0)

    assert all(isinstance(r, Exception) for r in asyncio.run(main()))
