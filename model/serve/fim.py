"""The Mercury-compatible `/v1/fim/completions` shape (the text-completion API that Continue, Zed
and minuet.nvim speak): its body as an InfillRequest with one hole, and results as `choices`.

`prompt` is the code before the hole, `suffix` the code after it, `max_tokens` the hole's budget,
`n` the candidates, `temperature` the sampling temperature. `stop` sequences cut each choice at
the first one found (a "\\n" among them also makes the hole single-line, so no passes go past the
line's end). `top_p` is accepted (0 < top_p <= 1) and not used: the sampler has no nucleus
cut-off. `model`, when given, must be the server's model name (404 `model_not_found`
otherwise, as OpenAI and Mercury answer). Other fields that text-completion clients send (`echo`,
`logprobs`, penalties, `user`) are ignored.

There are always `n` choices. The model's candidates that are the same text are one candidate to
it (model/infill.py keeps each text once, its best-scored copy); a choice that repeats an earlier
one is that: the model sampled the same text again. Streamed, `stream_options.include_usage`
adds a last chunk with empty `choices` and the `usage` (OpenAI's shape); without it no chunk
carries usage.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from model.interface import Hole, InfillRequest, InfillResult
from model.serve.options import RequestError, ServeOptions, typed

DEFAULT_MAX_TOKENS = 64
MAX_STOPS = 16
ENDED = {"budget": "length"}  # ended_by -> finish_reason; every other end is "stop"


@dataclass(frozen=True)
class FimAsk:
    request: InfillRequest
    stop: tuple[str, ...]
    stream: bool
    n: int
    include_usage: bool = False


def parse_fim(body: Any, opts: ServeOptions) -> FimAsk:
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    prompt = typed(body, "prompt", str, None)
    if prompt is None:
        raise RequestError("prompt (the code before the hole) is required")
    suffix = typed(body, "suffix", str, "")
    max_tokens = typed(body, "max_tokens", int, DEFAULT_MAX_TOKENS, 1, opts.max_hole_tokens)
    temperature = typed(body, "temperature", (int, float), 0.0, 0.0, 2.0)
    top_p = typed(body, "top_p", (int, float), 1.0, 0.0, 1.0)
    if top_p <= 0:
        raise RequestError(f"top_p must be in (0, 1], got {top_p!r}")
    n = typed(body, "n", int, 1, 1, opts.max_candidates)
    stream = typed(body, "stream", bool, False)
    model = typed(body, "model", str, None)
    if model is not None and model != opts.model_id:
        raise RequestError(
            f"the model {model!r} does not exist: this server serves {opts.model_id!r}",
            404,
            "model_not_found",
        )
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise RequestError(f"stream_options must be an object, got {stream_options!r}")
    include_usage = typed(stream_options or {}, "include_usage", bool, False)
    seed = typed(body, "seed", int, None)
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise RequestError(f"stop must be a string or a list of strings, got {stop!r}")
    stops = tuple(s for s in stops if s)
    if len(stops) > MAX_STOPS:
        raise RequestError(f"at most {MAX_STOPS} stop sequences, got {len(stops)}")
    hole = Hole(max_tokens, single_line="\n" in stops)
    req = InfillRequest(
        [prompt, hole, suffix], candidates=n, temperature=float(temperature), seed=seed
    )
    return FimAsk(req, stops, stream, n, include_usage)


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to its first stop sequence, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def choices(results: list[InfillResult], stops: tuple[str, ...], n: int) -> list[dict[str, Any]]:
    """`n` choices: the candidates in the model's order, then again from the first where it
    kept fewer (equal texts are one candidate to it)."""
    out = []
    for i in range(n if results else 0):
        r = results[i % len(results)]
        text, cut = cut_at_stop(r.fills[0] if r.fills else "", stops)
        why = r.ended_by[0] if r.ended_by else "pad"
        reason = "stop" if cut else ENDED.get(why, "stop")
        out.append({"index": i, "text": text, "finish_reason": reason, "logprobs": None})
    return out


def usage(prompt_tokens: int, results: list[InfillResult]) -> dict[str, int]:
    completion = sum(r.tokens for r in results)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex[:24]}"


def response(model: str, results, ask: FimAsk, prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": completion_id(),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices(results, ask.stop, ask.n),
        "usage": usage(prompt_tokens, results),
    }


def stream_chunks(model: str, results, ask: FimAsk, prompt_tokens: int) -> list[dict[str, Any]]:
    """Server-sent events in text-completion shape: each choice's text, then a chunk per choice
    with its finish_reason, then (`include_usage`) one with no choices and the `usage`; the
    caller ends with `data: [DONE]`."""
    cid, created = completion_id(), int(time.time())
    done = choices(results, ask.stop, ask.n)

    def chunk(choice: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
        }

    out = [chunk({**c, "finish_reason": None}) for c in done if c["text"]]
    out += [chunk({**c, "text": ""}) for c in done]
    if ask.include_usage:
        for c in out:
            c["usage"] = None
        out.append({**chunk({}), "choices": [], "usage": usage(prompt_tokens, results)})
    return out
