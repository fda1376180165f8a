"""Compressed request bodies (`Content-Encoding`, RFC 9110 8.4), on every protocol.

The codings are undone in the reverse of the order they are listed in (several header fields
read as one list): gzip (x-gzip too; a body of several gzip members, one after another, is
their concatenation, as RFC 1952 has it), deflate (a zlib stream) and identity. Any other
coding is 415. A body cut short, or bytes after a deflate stream, is 400; the decompressed body
is held to the body limit (413), so a small bomb cannot grow past it.
"""

from __future__ import annotations

import zlib

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # zlib's window bits: a gzip member, a zlib stream
GZIP = 31


def decode(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` as it was before the codings of the `Content-Encoding` value `encoding`."""
    for coding in reversed(encoding.lower().split(",")):
        coding = coding.strip()
        if coding in ("identity", ""):
            continue
        wbits = WBITS.get(coding)
        if wbits is None:
            raise UnsupportedMediaType(f"Content-Encoding {coding!r} is not supported; use gzip, deflate or none")
        body = _inflate(body, coding, wbits, limit)
    return body


def _inflate(data: bytes, coding: str, wbits: int, limit: int) -> bytes:
    parts, size = [], 0
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            part = inflater.decompress(data, limit + 1 - size)  # at most one byte past the limit
        except zlib.error as exc:
            raise BadRequest(f"body is not valid {coding} data: {exc}") from None
        parts.append(part)
        size += len(part)
        if size > limit:
            raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
        if not inflater.eof:
            raise BadRequest(f"body is not valid {coding} data: it ends before its compressed stream does")
        data = inflater.unused_data
        if not data:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if wbits != GZIP:
            raise BadRequest(f"body is not valid {coding} data: {len(data)} bytes follow its compressed stream")
