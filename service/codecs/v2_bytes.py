"""The binary tensor data extension's BYTES tensors, both ways: each element a 4-byte
little-endian length, then its bytes (UTF-8 text here). Request inputs (a table model's
`categories`) are decoded, response outputs (the `labels` column) encoded."""

from __future__ import annotations

import struct

import numpy as np


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
