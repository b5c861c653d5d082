"""Reading a request body as JSON for the model server, so that no body reaches the endpoints
that they could fail on: every refusal is a `RequestError` (a 4xx answer), never an exception.

A body is refused when it is over the size limit (413), not UTF-8 or not JSON (400), or holds what
Python's `json` reads but the server cannot take (400): NaN, Infinity or -Infinity (not JSON, and
a NaN passes every range check) or a number too large for a float (1e999 reads as infinity),
nesting deeper than `MAX_DEPTH` (the decoder's recursion, and every walk after it), or a string
with a lone surrogate (`"\\ud800"`: JSON allows the escape; no text can be encoded with it, so the
tokenizer failed on it).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

from model.serve.options import RequestError

MAX_DEPTH = 32  # the deepest a request is (a native request's segments: 4)


def _no_constant(name: str) -> Any:
    raise RequestError(f"the body is not valid JSON: {name} is not a JSON number", 400)


def parse(body: bytes) -> Any:
    """`body` as a JSON value, checked (module docstring); RequestError(400) otherwise."""
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"the body is not valid JSON: {exc}", 400) from None
    except RecursionError:
        raise RequestError(f"the body is nested deeper than {MAX_DEPTH} levels", 400) from None
    check(value)
    return value


def check(value: Any) -> None:
    """Walk a parsed value without recursion: depth, finite numbers, encodable strings."""
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise RequestError("the body holds a number too large for a float", 400)
        elif isinstance(item, (list, dict)):
            if depth > MAX_DEPTH:
                raise RequestError(f"the body is nested deeper than {MAX_DEPTH} levels", 400)
            if isinstance(item, dict):
                todo.extend((k, depth) for k in item)
                todo.extend((v, depth + 1) for v in item.values())
            else:
                todo.extend((v, depth + 1) for v in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise RequestError(
            f"the body holds a lone surrogate (\\u{ord(bad):04x}) in a string: not text", 400
        ) from None


async def read(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The body from `chunks`, refused (413) past `limit` bytes, declared or as it comes."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the body is over {limit} bytes", 413)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise RequestError(f"the body is over {limit} bytes", 413)
    return bytes(body)
