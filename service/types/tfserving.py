"""TensorFlow Serving REST objects: one pydantic model per object of its REST API doc.

Docstrings quote the TF Serving RESTful API guide. As in `service.types.v2`, tensor values are
`Any`: `service.codecs.tfserving` converts them with numpy instead of validating each number.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from service.errors import ErrorResponse  # noqa: F401 - the one error body, named here for this protocol's routes


class _Object(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Object):
    """Predict API request: "signature_name": "(Optional) Serving signature to use. If unspecifed
    default serving signature is used." "Input Tensors in row ("instances") or columnar
    ("inputs") format. A request can have either of them but NOT both."""

    # Fields this API does not use are ignored, not refused: clients written for other servers add some.
    model_config = ConfigDict(extra="ignore")

    signature_name: StrictStr | None = None
    instances: Any = None
    inputs: Any = None

    @model_validator(mode="after")
    def _one_format(self) -> PredictRequest:
        if (self.instances is None) == (self.inputs is None):
            raise ValueError("send either 'instances' (row format) or 'inputs' (columnar format), not both or neither")
        return self


class RowResponse(_Object):
    """"A request in row format has response formatted as follows: {"predictions": ...}. If the
    output of the model contains only one named tensor, we omit the name and predictions key maps
    to a list of scalar or list values."""

    predictions: list


class ColumnarResponse(_Object):
    """"A request in columnar format has response formatted as follows: {"outputs": ...}. If the
    output of the model contains only one named tensor, we omit the name and outputs key maps to
    a list of scalar or list values."""

    outputs: list


class Status(_Object):
    """StatusProto: an error code name ("OK" when fine) and its message."""

    error_code: str
    error_message: str


class ModelVersionStatus(_Object):
    """"Version of the servable", its "Current state" (AVAILABLE once it serves) and "Status"."""

    version: str
    state: str
    status: Status


class GetModelStatusResponse(_Object):
    """Model status API: "returns the status of a model in the ModelServer" as
    GetModelStatusResponse: "Version number and status for each version of a model"."""

    model_version_status: list[ModelVersionStatus]


class Dim(_Object):
    """TensorShapeProto.Dim: "Size of the tensor in that dimension" (-1 unknown), as a JSON string."""

    size: str
    name: str = ""


class TensorShape(_Object):
    """TensorShapeProto: "Dimensions of the tensor" and "unknown_rank"."""

    dim: list[Dim]
    unknown_rank: bool = False


class TensorInfo(_Object):
    """TensorInfo: the tensor's "name", "dtype" (a DataType such as DT_FLOAT) and "tensor_shape"."""

    name: str
    dtype: str
    tensor_shape: TensorShape


class SignatureDef(_Object):
    """SignatureDef: named "inputs" and "outputs" and the "method_name" it implements."""

    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str


class SignatureDefMap(_Object):
    """SignatureDefMap: the signatures by key, e.g. "serving_default"; a google.protobuf.Any in the
    metadata map, so its JSON names its type in "@type" (protobuf's parsers need it)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type_url: Literal["type.googleapis.com/tensorflow.serving.SignatureDefMap"] = Field(alias="@type")
    signature_def: dict[str, SignatureDef]


class ModelSpec(_Object):
    """ModelSpec: "Required servable name", "version" and "signature_name"."""

    name: str
    signature_name: str
    version: str


class Metadata(_Object):
    """GetModelMetadataResponse.metadata: "Map of metadata field name to metadata field"."""

    signature_def: SignatureDefMap


class GetModelMetadataResponse(_Object):
    """Model metadata API: "returns the metadata of a model in the ModelServer" as
    GetModelMetadataResponse: "Model Specification indicating which model this metadata belongs
    to" and its metadata (the signature_def map)."""

    model_spec: ModelSpec
    metadata: Metadata
