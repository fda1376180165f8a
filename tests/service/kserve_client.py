"""Run inside the KServe SDK's own venv (see test_kserve_client.py): infer with
`kserve.InferenceRESTClient` over JSON and binary tensor data; print what came back as JSON."""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput


async def main(url: str, model: str, input_name: str, rows: list) -> dict:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    answers = {}
    for binary in (False, True):
        tensor = InferInput(input_name, [len(rows), len(rows[0])], "FP32")
        tensor.set_data_from_numpy(np.asarray(rows, dtype=np.float32), binary_data=binary)
        outputs = [RequestedOutput("probabilities", parameters={"binary_data": binary}), RequestedOutput("labels")]
        request = InferRequest(model_name=model, infer_inputs=[tensor], request_id=f"kserve-{binary}",
                               request_outputs=outputs)
        response = await client.infer(url, request, model_name=model)
        answers["binary" if binary else "json"] = {
            "id": response.id, "model": response.model_name,
            "outputs": {o.name: o.as_numpy().tolist() for o in response.outputs}}
    await client.close()
    return answers


if __name__ == "__main__":
    url, model, input_name, rows = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    print(json.dumps(asyncio.run(main(url, model, input_name, rows))))
