"""The Open Inference Protocol's binary tensor data extension: the bytes after a request's JSON
header, each input's part of them, read as numbers or as BYTES (each element a 4-byte
little-endian length, then its bytes, UTF-8 text here); and the response's `labels` column
written as BYTES. Every failure of a request's binary data is a 400 naming the input."""

from __future__ import annotations

import struct

import numpy as np

from service.errors import BadRequest
from service.types.v2 import RequestInput


def chunks(inputs: list[RequestInput], tail: bytes) -> list[bytes]:
    """Each input's part of the binary tail, in request order by `binary_data_size`; the last
    input that declares one (or the last input, when none does) takes what remains, so its own
    size check reports any difference."""
    sizes = [(i.parameters or {}).get("binary_data_size") for i in inputs]
    last = max((k for k, size in enumerate(sizes) if size is not None), default=len(sizes) - 1)
    parts, start = [], 0
    for k, size in enumerate(sizes):
        stop = len(tail) if k == last else start + size if type(size) is int and size >= 0 else start
        parts.append(tail[start:stop])
        start = stop
    return parts


def declared_size(inp: RequestInput, chunk: bytes) -> object:
    """The input's `binary_data_size` (None: its data is JSON); bytes left over without one, or
    JSON `data` beside one, are a 400."""
    size = (inp.parameters or {}).get("binary_data_size")
    if size is None and chunk:
        raise BadRequest(f"{len(chunk)} bytes of binary data follow the JSON, but no input declares binary_data_size")
    if size is not None and inp.data is not None:
        raise BadRequest(f"input {inp.name!r} has both 'data' and binary_data_size; send one")
    return size


def values(inp: RequestInput, size: object, chunk: bytes, count: int, dtype: np.dtype) -> np.ndarray:
    """The input's `count` numbers of `dtype`, little-endian, as the chunk holds them."""
    dtype = dtype.newbyteorder("<")
    if type(size) is not int or size != count * dtype.itemsize:
        raise BadRequest(f"input {inp.name!r}: shape {inp.shape} of {inp.datatype.value} needs "
                         f"binary_data_size {count * dtype.itemsize}, got {size!r}")
    if size != len(chunk):
        raise BadRequest(f"input {inp.name!r} declares {size} bytes of binary data, the body carries {len(chunk)}")
    return np.frombuffer(chunk, dtype=dtype)


def strings(inp: RequestInput, size: object, chunk: bytes, count: int) -> list[str]:
    """The input's `count` BYTES elements as text."""
    if type(size) is not int or size != len(chunk):
        raise BadRequest(f"input {inp.name!r} declares {size!r} bytes of binary data, the body carries {len(chunk)}")
    try:
        texts = decode(chunk)
    except ValueError as exc:
        raise BadRequest(f"input {inp.name!r}: binary BYTES data must be 4-byte little-endian lengths each "
                         f"followed by that many UTF-8 bytes ({exc})") from None
    if len(texts) != count:
        raise BadRequest(f"input {inp.name!r}: shape {inp.shape} holds {count} elements, binary data has {len(texts)}")
    return texts


def encode(array: np.ndarray) -> bytes:
    """A string array's elements in row-major order."""
    # A label column repeats a few values, so each distinct one is encoded once.
    items = array.ravel().tolist()
    packed = {s: struct.pack("<I", len(b)) + b for s in set(items) for b in (s.encode(),)}
    return b"".join(map(packed.__getitem__, items))


def decode(data: bytes) -> list[str]:
    """Every element of `data`; ValueError saying why when it is not such a tensor of UTF-8 text."""
    texts, at, size = [], 0, len(data)
    try:
        while at < size:
            (length,) = struct.unpack_from("<I", data, at)
            if at + 4 + length > size:
                raise ValueError(f"the element at byte {at} runs past the end")
            texts.append(data[at + 4:at + 4 + length].decode())
            at += 4 + length
    except struct.error as exc:
        raise ValueError(str(exc)) from None
    return texts  # a UnicodeDecodeError is a ValueError too
