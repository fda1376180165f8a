"""Open Inference Protocol (KServe V2) REST objects: one pydantic model per spec object.

Docstrings quote the spec (tests/data/specs/inference_rest.md). Tensor `data` is typed `Any` on
purpose: pydantic passes it through untouched, and `service.codecs.v2` converts it with numpy,
because validating a large array element by element would cost more than running the model.
Requests are validated with these models (cheap: a handful of small fields); responses are built
as plain dicts on the request path and re-validated against these models in the tests.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from service.errors import ErrorResponse  # noqa: F401 - the one error body, named here for this protocol's routes

# "$parameter = $string : $string | $number | $boolean"
Parameters = dict[str, StrictStr | StrictInt | StrictFloat | StrictBool]
# "Each dimension must be an integer representable as an unsigned 64-bit integer value."
Shape = list[Annotated[int, Field(strict=True, ge=0, le=2**64 - 1)]]
# Model metadata uses -1 for "variable-size dimensions".
MetadataShape = list[Annotated[int, Field(strict=True, ge=-1)]]


class _Object(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The spec's request objects do not forbid other properties, and real clients send some (KServe's
# SDK puts "model_name" in the body): requests ignore what they do not know; what we send is exact.
_REQUEST = ConfigDict(extra="ignore")


class Datatype(str, Enum):
    """Tensor Data Types: "Tensor data types are shown in the following table along with the size
    of each type, in bytes." BOOL 1, UINT8 1, UINT16 2, UINT32 4, UINT64 8, INT8 1, INT16 2,
    INT32 4, INT64 8, FP16 2, FP32 4, FP64 8, BYTES variable (max 2^32)."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"


class _Tensor(_Object):
    """A tensor on the wire: the fields $inference_request_input and $response_output share."""

    name: StrictStr
    shape: Shape
    datatype: Datatype
    parameters: Parameters | None = None
    data: Any = None


class RequestInput(_Tensor):
    """$inference_request_input: "describes an input to the model. If the input is batched, the
    shape and data must represent the full shape and contents of the entire batch."
    `data` may be absent when the binary tensor data extension carries the tensor
    (`parameters.binary_data_size`)."""

    model_config = _REQUEST


class RequestOutput(_Object):
    """$inference_request_output: "is used to request which output tensors should be returned
    from the model." `parameters.binary_data` asks for the binary tensor data extension."""

    model_config = _REQUEST

    name: StrictStr
    parameters: Parameters | None = None


class InferenceRequest(_Object):
    """$inference_request: "id" is "An identifier for this request. Optional, but if specified this
    identifier must be returned in the response." "outputs" is "Optional, if not specified all
    outputs produced by the model will be returned using default $request_output settings."""

    model_config = _REQUEST

    id: StrictStr | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(_Tensor):
    """$response_output: "describes an output from the model. If the output is batched, the shape
    and data represents the full shape of the entire batch." With binary data, `data` is absent
    and `parameters.binary_data_size` gives the tensor's byte count in the body after the JSON."""


class InferenceResponse(_Object):
    """$inference_response: "model_version" is "The specific model version used for inference";
    "id" is "The "id" identifier given in the request, if any."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(_Object):
    """$metadata_tensor: "name" of the tensor, "datatype" as in Tensor Data Types, and "shape":
    "Variable-size dimensions are specified as -1."""

    name: str
    datatype: Datatype
    shape: MetadataShape


class MetadataModelResponse(_Object):
    """$metadata_model_response: "name", "versions" ("The model versions that may be explicitly
    requested via the appropriate endpoint"), "platform" ("The framework/backend for the model"),
    "inputs" ("The inputs required by the model") and "outputs" ("The outputs produced by the model")."""

    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class MetadataServerResponse(_Object):
    """$metadata_server_response: "name" ("A descriptive name for the server"), "version" ("The
    server version") and "extensions" ("The extensions supported by the server")."""

    name: str
    version: str
    extensions: list[str]


class ServerLiveResponse(_Object):
    """$live_server_response = {"live" : $bool}."""

    live: bool


class ServerReadyResponse(_Object):
    """$ready_server_response: the spec text writes {"live" : $bool}, KServe's datamodels (and
    intent: "indicates if all the models are ready for inferencing") {"ready": $bool}; we send both."""

    ready: bool
    live: bool


class ModelReadyResponse(_Object):
    """$ready_model_response = {"name" : $string, "ready": $bool}."""

    name: str
    ready: bool
