"""Metrics at /metrics, request ids and the JSON access log."""

from __future__ import annotations

import logging

import orjson
import pytest

from service import logs
from service.config import Settings
from service.main import create_app
from tests.service import helpers
from tests.service.helpers import metric

pytestmark = pytest.mark.anyio
BODY = {"instances": [[1, 2], [0, 0]]}


async def test_requests_are_counted_by_model_version_endpoint_and_status(client):
    for _ in range(3):
        assert (await client.post("/models/tiny-regression/predict", json=BODY)).status_code == 200
    assert (await client.post("/v2/models/tiny-multiclass/versions/1/infer", json={"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]})).status_code == 200
    assert (await client.post("/models/tiny-regression/predict", json={"instances": [[1]]})).status_code == 400
    text = (await client.get("/metrics")).text
    ok = dict(model="tiny-regression", version="1", endpoint="/models/{name}/predict")
    assert metric(text, "tinyserve_requests_total", **ok, status="200") == 3
    assert metric(text, "tinyserve_request_duration_seconds_count", **ok, status="200") == 3
    assert metric(text, "tinyserve_requests_total", **ok, status="400") == 1
    assert metric(text, "tinyserve_request_rows_sum", **ok) == 6
    assert metric(text, "tinyserve_inference_duration_seconds_count", model="tiny-regression", version="1") == 3
    assert metric(text, "tinyserve_requests_total", model="tiny-multiclass", version="1",
                  endpoint="/v2/models/{name}/versions/{version}/infer", status="200") == 1
    assert metric(text, "tinyserve_requests_in_flight") == 1  # the scrape itself
    assert metric(text, "tinyserve_model_version_status", model="tiny-multiclass", version="2",
                  status="ready") == 1


async def test_v2_metadata_and_ready_are_counted_for_their_model(client):
    for path in ("/v2/models/tiny-multiclass", "/v2/models/tiny-multiclass/ready",
                 "/v2/models/tiny-multiclass/versions/1", "/v2/models/tiny-multiclass/versions/1/ready"):
        assert (await client.get(path)).status_code == 200, path
    text = (await client.get("/metrics")).text
    for endpoint, version in [("/v2/models/{name}", "2"), ("/v2/models/{name}/ready", "2"),
                              ("/v2/models/{name}/versions/{version}", "1"),
                              ("/v2/models/{name}/versions/{version}/ready", "1")]:
        assert metric(text, "tinyserve_requests_total", model="tiny-multiclass", version=version,
                      endpoint=endpoint, status="200") == 1, endpoint


async def test_tf_serving_and_native_status_and_metadata_are_counted_for_their_model(client):
    routes = [("/v1/models/tiny-multiclass", "/v1/models/{name}", "2"),
              ("/v1/models/tiny-multiclass/versions/1", "/v1/models/{name}/versions/{version}", "1"),
              ("/v1/models/tiny-multiclass/metadata", "/v1/models/{name}/metadata", "2"),
              ("/v1/models/tiny-multiclass/versions/1/metadata", "/v1/models/{name}/versions/{version}/metadata", "1"),
              ("/models/tiny-multiclass", "/models/{name}", "2"),
              ("/models/tiny-multiclass/versions/1", "/models/{name}/versions/{version}", "1")]
    for path, _, _ in routes:
        assert (await client.get(path)).status_code == 200, path
    text = (await client.get("/metrics")).text
    for _, endpoint, version in routes:
        assert metric(text, "tinyserve_requests_total", model="tiny-multiclass", version=version,
                      endpoint=endpoint, status="200") == 1, endpoint


async def test_only_inference_requests_have_inference_and_rows_series(client):
    assert (await client.get("/health/ready")).status_code == 200
    assert (await client.post("/models/tiny-regression/predict", json={"instances": [[1]]})).status_code == 400
    text = (await client.get("/metrics")).text
    assert metric(text, "tinyserve_requests_total", endpoint="/health/ready", status="200") == 1
    assert "tinyserve_inference_duration_seconds_count{" not in text  # no empty histograms
    assert "tinyserve_request_rows_count{" not in text
    assert (await client.post("/models/tiny-regression/predict", json=BODY)).status_code == 200
    text = (await client.get("/metrics")).text
    assert metric(text, "tinyserve_inference_duration_seconds_count", model="tiny-regression", version="1") == 1
    assert text.count("tinyserve_request_rows_count{") == 1


async def test_unknown_models_and_paths_add_no_label_values(client):
    for name in ("nope", "../etc", "x" * 200):
        await client.post("/predict", json={"model": name, "instances": [[0]]})
        await client.post(f"/models/{name}/predict", json=BODY)
        await client.get(f"/random/{name}")
    text = (await client.get("/metrics")).text
    assert "nope" not in text and "etc" not in text and "xxxx" not in text and "random" not in text
    assert metric(text, "tinyserve_requests_total", model="none", version="none", endpoint="/predict",
                  status="404") == 3
    assert metric(text, "tinyserve_requests_total", model="none", endpoint="unmatched", status="404") >= 3


async def test_apps_do_not_share_counts(settings):
    for _ in range(2):
        async with helpers.serve(create_app(settings)) as client:
            await client.get("/health/live")
            text = (await client.get("/metrics")).text
        assert metric(text, "tinyserve_requests_total", endpoint="/health/live", status="200") == 1


async def test_metrics_can_be_switched_off(model_root):
    async with helpers.serve(create_app(Settings(model_root=model_root, metrics_enabled=False))) as client:
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.post("/models/tiny-regression/predict", json=BODY)).status_code == 200


@pytest.mark.parametrize("given, kept", [
    ("abc-123", True), ("a.b_c:d", True), ("x" * 64, True), ("x" * 65, False),
    ("bad id", False), ("<script>", False), ("new\\nline", False), ("", False)])
async def test_request_id_is_echoed_when_safe(client, given, kept):
    response = await client.get("/health/live", headers={"X-Request-ID": given})
    rid = response.headers["x-request-id"]
    assert (rid == given) is kept
    assert 1 <= len(rid) <= 64


async def test_request_id_is_generated_and_unique(client):
    ids = {(await client.get("/health/live")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


async def test_one_access_log_line_per_request_without_input_data(app, client, caplog, capsys):
    caplog.set_level(logging.INFO, logs.ACCESS)
    secret = 123456.789
    response = await client.post("/models/tiny-regression/predict", json={"instances": [[secret, 1]]},
                                 headers={"X-Request-ID": "req-1"})
    assert response.status_code == 200
    app.state.access_log.flush()  # access lines are buffered (service.logs.AccessLog)
    written = capsys.readouterr().err
    records = [line for line in map(orjson.loads, written.splitlines()) if line.get("logger") == logs.ACCESS]
    assert len(records) == 1
    line = records[0]
    assert line | {"ts": None, "latency_ms": None} == {
        "ts": None, "level": "info", "logger": logs.ACCESS, "msg": "request", "request_id": "req-1",
        "client": "127.0.0.1", "method": "POST", "path": "/models/{name}/predict", "status": 200, "latency_ms": None,
        "model": "tiny-regression", "version": 1, "rows": 1}
    assert line["latency_ms"] > 0
    assert str(secret) not in caplog.text and "123456" not in caplog.text
    assert str(secret) not in written and "123456" not in written


async def test_access_lines_are_written_at_shutdown_and_follow_the_log_level(settings, capsys, caplog):
    caplog.set_level(logging.INFO, logs.ACCESS)
    async with helpers.serve(create_app(settings)) as client:
        for _ in range(3):
            await client.get("/health/live")
    # No explicit flush: the lifespan's exit writes what is buffered.
    lines = [orjson.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [x["path"] for x in lines if x.get("logger") == logs.ACCESS] == ["/health/live"] * 3
    caplog.set_level(logging.WARNING, logs.ACCESS)
    async with helpers.serve(create_app(settings)) as client:
        await client.get("/health/live")
    assert logs.ACCESS not in capsys.readouterr().err


def test_noted_requests_are_recorded_as_observe_would():
    from prometheus_client import generate_latest

    from service.metrics import Metrics

    def samples(m):
        return sorted(line for line in generate_latest(m.registry).decode().splitlines()
                      if line.startswith("tinyserve_") and "_created" not in line)

    direct, folded = Metrics(), Metrics()
    values = [0.0001, 0.0005, 0.0007, 0.003, 0.2, 0.5, 7.0, 99.0]
    for v in values:
        direct.latency.labels("m", "1", "/e", "200").observe(v)
        direct.requests.labels("m", "1", "/e", "200").inc()
        direct.rows.labels("m", "1", "/e").observe(int(v * 1000))
        direct.inference.labels("m", "1").observe(v)
        folded.observe("m", "1", "/e", 200, v, int(v * 1000), v)
    assert samples(folded) != samples(direct)  # noted, not recorded yet
    folded.flush()

    assert samples(folded) == samples(direct)


def test_log_config_makes_every_logger_json():
    import logging.config

    config = logs.config("warning")
    assert set(config["loggers"]) >= {"uvicorn", "uvicorn.error", "uvicorn.access"}
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "boom %s", ("x",), None)
    assert orjson.loads(logs.JsonFormatter().format(record))["msg"] == "boom x"


def test_generated_ids_differ_across_processes():
    import multiprocessing
    from service import observe
    mine = observe.new_id()
    assert len(mine) == 32 and int(mine, 16) >= 0
    with multiprocessing.get_context("fork").Pool(1) as pool:  # a forked worker draws its own prefix
        theirs = pool.apply(observe.new_id)
    assert theirs[:16] != mine[:16]
    assert observe.new_id()[:16] == mine[:16] and observe.new_id() != observe.new_id()


async def test_metrics_hold_the_process_and_no_created_samples(client):
    await client.get("/health/live")
    text = (await client.get("/metrics")).text
    assert helpers.metric(text, "process_resident_memory_bytes") > 0
    assert helpers.metric(text, "process_open_fds") > 0
    assert "_created" not in text  # a timestamp beside every series, doubling them
