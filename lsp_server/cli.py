"""The `parafill` command line: serve (LSP over stdio or 127.0.0.1 TCP), complete, fill, status.

`parafill complete FILE:LINE:COL` (1-based, as compilers print positions) prints exactly the fill on
stdout, nothing added, so prefix + output + suffix is the completed file. `parafill fill FILE`
fills every `<|fill|>` / `<|fill:N|>` marker at once. Errors print one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from dataclasses import replace

from lsp_server.config import DEVICES, PRECISIONS
from model.families.checkpoint import FAMILIES as MODEL_FAMILIES
from model.families.specs import PASS_CACHES
from model.interface import SCHEDULES

EXIT_USAGE = 2
ONE_SHOT = ("complete", "fill")  # commands that answer once and exit (no cycle collector)
LOCALHOST = "127.0.0.1"
RAW_BUDGET = 64  # fill --raw: a marker's tokens at most (DreamOn's max_gen_len)


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line instead of usage + traceback
        raise CliError(message)


def _backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", default=None, help="Infiller factory as package.module:function(path, device)"
    )


def _loader(args):
    """The infiller factory `--backend` names (the built-in one without it)."""
    from lsp_server.engine import builtin_loader, import_loader

    try:
        return import_loader(args.backend) if args.backend else builtin_loader
    except (ImportError, AttributeError, ValueError) as exc:
        raise CliError(f"cannot load backend {args.backend}: {exc}") from exc


def _repo_context_option(parser: argparse.ArgumentParser, said: str) -> None:
    parser.add_argument(
        "--repo-context",
        action="store_true",
        help="read the definitions the code uses from the other files of FILE's repository (the "
        f"nearest folder with .git) ahead of the prefix; {said}",
    )


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint directory, or a hub id already in the local hub cache (default: the "
        "shipped model/weights/); a published diffusion coder as `hf download` leaves it",
    )
    p.add_argument(
        "--model-family",
        default=None,
        choices=MODEL_FAMILIES,
        help="the checkpoint's family where its config.json does not say (Open-dCoder's says qwen2)",
    )
    p.add_argument(
        "--pass-cache",
        default=None,
        choices=PASS_CACHES,
        help="a published checkpoint's passes: exact (the whole window, the default) or dual "
        "(Fast-dLLM's dual cache: the context's keys and values reused by passes over the holes)",
    )
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="weights of the built-in model (default: int8 on CPU, bf16 on CUDA)",
    )
    p.add_argument(
        "--threads", type=int, default=0, help="CPU threads (default: 1 on a 2-core machine)"
    )


def _sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--budget", type=int, default=None, help="mask tokens per hole (default: by region kind)"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="denoising steps (fixed schedule; with --schedule threshold: at most this many)",
    )
    p.add_argument("--threshold", type=float, default=None, help="confidence threshold schedule")
    p.add_argument("--schedule", choices=SCHEDULES, default=None)
    p.add_argument("--candidates", type=int, default=1)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--tokens-per-step",
        type=int,
        default=None,
        metavar="N",
        help="commit N tokens a pass, the most confident first (1: as the published samplers)",
    )
    p.add_argument(
        "--no-length-estimate",
        dest="length_estimate",
        action="store_false",
        help="end line fills by the PAD budget alone, without the model's length signal",
    )


def _remote_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--remote",
        metavar="URL",
        default=None,
        help="ask the model server at URL (parafill serve-model, or a fim provider) instead of "
        "loading the model here",
    )
    p.add_argument("--remote-api", choices=["parafill", "fim"], default="parafill")
    p.add_argument("--remote-model", default=None, help="the model name a fim provider expects")
    p.add_argument(
        "--api-key-env",
        metavar="NAME",
        default=None,
        help="the environment variable that holds the model server's token",
    )
    p.add_argument("--timeout-ms", type=int, default=10_000)


def _serve_model_parser(sub) -> None:
    from model.serve.options import DEFAULT_API_KEY_ENV, DEFAULT_HOST, DEFAULT_PORT, ServeOptions

    d = ServeOptions()
    m = sub.add_parser(
        "serve-model",
        help="run the model server for a team (FastAPI on Ray Serve; needs parafill[serve])",
    )
    m.add_argument("--host", default=DEFAULT_HOST, help="bind address (not loopback: token needed)")
    m.add_argument("--port", type=int, default=DEFAULT_PORT)
    m.add_argument("--replicas", type=int, default=1, help="copies of the model (Ray Serve)")
    _backend_option(m)
    m.add_argument("--model-id", default=d.model_id, help="the model name /v1/models lists")
    m.add_argument(
        "--api-key-env",
        metavar="NAME",
        default=None,
        help="environment variable holding the bearer token clients must send "
        f"(default {DEFAULT_API_KEY_ENV}, used when set; named here, it must be set; required "
        "when --host is not loopback)",
    )
    m.add_argument(
        "--request-seconds",
        type=float,
        default=d.request_seconds,
        help="every request's time budget on the model; past it, a 408 error",
    )
    m.add_argument(
        "--max-request-tokens",
        type=int,
        default=d.max_request_tokens,
        help="the most candidates x hole tokens one request may ask (0: automatic, by device)",
    )
    m.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name accepted besides loopback without a token (repeatable)",
    )
    m.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an origin that gets CORS headers (repeatable; default: no CORS)",
    )
    m.add_argument(
        "--no-calibrate-batch",
        dest="calibrate_batch",
        action="store_false",
        help="batch up to --max-batch-size as given, without measuring at start",
    )
    m.add_argument("--max-queue", type=int, default=d.max_queue, help="per replica; past it 429")
    m.add_argument("--max-batch-size", type=int, default=d.max_batch_size)
    m.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms)
    m.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    m.add_argument("--max-holes", type=int, default=d.max_holes)
    m.add_argument("--max-hole-tokens", type=int, default=d.max_hole_tokens)
    m.add_argument(
        "--ray-address", default=None, help="join this Ray cluster (default: start a local one)"
    )
    m.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    m.add_argument(
        "--gpus-per-replica", type=float, default=None, help="default: 1 with --device cuda, else 0"
    )
    m.add_argument(
        "--no-ray", action="store_true", help="serve from this process with uvicorn (one replica)"
    )
    _model_options(m)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="parafill", description="Code completion from a masked-diffusion language model."
    )
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    s = sub.add_parser("serve", help="run the language server (stdio by default)")
    s.add_argument(
        "--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT instead of stdio"
    )
    _backend_option(s)
    s.add_argument("--log-file", default=None)
    _model_options(s)

    c = sub.add_parser("complete", help="fill the region at FILE:LINE:COL and print the fill")
    c.add_argument("position", metavar="FILE:LINE:COL")
    c.add_argument(
        "--show-steps", action="store_true", help="print the span after each step on stderr"
    )
    _repo_context_option(c, "--show-steps says which")
    _backend_option(c)
    _model_options(c)
    _sampling_options(c)
    _remote_options(c)

    f = sub.add_parser("fill", help="fill every <|fill|> or <|fill:N|> marker in FILE at once")
    f.add_argument("file")
    f.add_argument("--in-place", "-i", action="store_true", help="write the result back to FILE")
    f.add_argument(
        "--raw",
        action="store_true",
        help="each hole's raw fill in place: the markers as holes (budget --budget, default 64), "
        "no region planning, no stop rules, no post-processing",
    )
    _repo_context_option(f, "ranked at the first marker")
    _backend_option(f)
    _model_options(f)
    _sampling_options(f)
    _remote_options(f)

    st = sub.add_parser("status", help="show the model checkpoint, device and grammars")
    st.add_argument("--json", action="store_true")
    _model_options(st)

    sa = sub.add_parser("stats", help="suggestions shown, accepted and dismissed (server log)")
    sa.add_argument(
        "--log",
        metavar="FILE",
        default=None,
        help="the server's log (its logFile setting); default: standard input",
    )
    sa.add_argument("--json", action="store_true")

    dr = sub.add_parser(
        "doctor",
        help="check Python, torch, the checkpoint, grammars and the server; say what to fix",
    )
    dr.add_argument(
        "--model",
        default=None,
        help="checkpoint directory or cached hub id (default: the shipped one); a published "
        "coder's family, files, tokenizer, special tokens and memory are checked",
    )
    dr.add_argument("--model-family", default=None, choices=MODEL_FAMILIES)
    dr.add_argument("--no-server", action="store_true", help="skip starting the language server")

    _serve_model_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # keep stderr for our own output
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the server and CLI make no network calls
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        args = build_parser().parse_args(argv)
        commands = {"serve": serve, "complete": complete, "fill": fill, "status": status}
        commands["serve-model"] = serve_model
        commands["stats"] = stats
        commands["doctor"] = doctor
        return commands[args.cmd](args)
    except CliError as exc:
        print(f"parafill: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


# ---- serve ---------------------------------------------------------------------------------


def serve(args) -> int:
    from lsp_server.config import Settings
    from lsp_server.server import create_server

    server = create_server(_loader(args))
    server.settings = replace(
        Settings(),
        model_path=args.model,
        device=args.device,
        precision=args.precision,
        model_family=args.model_family,
        pass_cache=args.pass_cache or "exact",
        log_file=args.log_file,
        threads=args.threads,
    )
    from lsp_server.framing import start_io, start_tcp  # frames read by our reader, not pygls's

    if args.tcp is not None:
        start_tcp(server, LOCALHOST, args.tcp)
    else:
        start_io(server)
    # LSP: exit after shutdown is 0, without it 1 (pygls's own exit code is lost in its loop)
    return 0 if server.protocol.exit_code is None else server.protocol.exit_code


# ---- serve-model ----------------------------------------------------------------------------


def serve_model(args) -> int:
    """The model server (model/serve/): on Ray Serve, or with --no-ray in this process."""
    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client") if not _importable(m)]
    if not args.no_ray and not _importable("ray.serve"):
        missing.append("ray[serve]")
    if missing:
        raise CliError(
            f"serve-model needs the serve extra ({', '.join(missing)} missing): "
            "pip install 'parafill[serve]'"
        )
    from model.serve.options import DEFAULT_API_KEY_ENV, ServeOptions, is_loopback

    opts = ServeOptions(
        model=args.model,
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        model_family=args.model_family,
        pass_cache=args.pass_cache,
        threads=args.threads,
        model_id=args.model_id,
        api_key_env=args.api_key_env or DEFAULT_API_KEY_ENV,
        api_key_env_given=args.api_key_env is not None,
        request_seconds=args.request_seconds,
        max_request_tokens=args.max_request_tokens,
        allowed_hosts=tuple(args.allowed_host),
        cors_origins=tuple(args.cors_origin),
        calibrate_batch=args.calibrate_batch,
        max_queue=args.max_queue,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        max_body_bytes=args.max_body_bytes,
        max_holes=args.max_holes,
        max_hole_tokens=args.max_hole_tokens,
    )
    if opts.api_key() is None and not is_loopback(args.host):
        raise CliError(
            f"binding to {args.host} (not loopback) needs a token: set the environment variable "
            f"{opts.api_key_env} (named by --api-key-env); clients send it as a bearer token"
        )
    if min(args.replicas, args.max_queue, args.max_batch_size) < 1:
        raise CliError("--replicas, --max-queue and --max-batch-size must be at least 1")

    def ready(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.no_ray:
        import uvicorn

        from model.serve.app import local_app

        try:
            app = local_app(opts)
        except Exception as exc:  # a checkpoint that cannot load: one line
            raise CliError(f"cannot load the model: {exc}") from exc
        ready(f"parafill model server on http://{args.host}:{args.port} (no Ray, one process)")
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0
    from model.serve.deployment import serve_model as run_on_ray

    gpus = args.gpus_per_replica
    if gpus is None:
        gpus = 1.0 if args.device == "cuda" else 0.0
    run_on_ray(
        opts,
        args.host,
        args.port,
        replicas=args.replicas,
        ray_address=args.ray_address,
        num_cpus=args.num_cpus,
        cpus_per_replica=max(1, args.threads),
        gpus_per_replica=gpus,
        ready=ready,
    )
    return 0


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


# ---- complete / fill ------------------------------------------------------------------------


def _read(path: str) -> str:
    if not os.path.isfile(path):
        raise CliError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text") from exc


def _engine(args, required: bool = True):
    """An engine with the model loaded (CliError when it cannot load and is `required`)."""
    from lsp_server.engine import Engine

    if getattr(args, "remote", None):
        engine = Engine(_remote_loader(args), threads=args.threads)
    elif getattr(args, "backend", None):
        engine = Engine(_loader(args), threads=args.threads)
    else:
        engine = Engine(threads=args.threads)
    engine.load(
        args.model,
        args.device,
        args.precision,
        family=getattr(args, "model_family", None),
        cache=getattr(args, "pass_cache", None),
    )
    if not engine.wait_ready() and required:
        raise CliError(engine.error or "model failed to load")
    return engine


def _remote_loader(args):
    """`--remote URL`: the model server answers (no fallback: its errors are the CLI's)."""
    from lsp_server.config import parse_settings
    from lsp_server.engine import remote_loader

    raw = {
        "backend": "remote",
        "remote.url": args.remote,
        "remote.api": args.remote_api,
        "remote.model": args.remote_model,
        "remote.apiKeyEnv": args.api_key_env,
        "remote.timeoutMs": args.timeout_ms,
    }
    settings, problems = parse_settings(raw)
    if problems:
        raise CliError("; ".join(p.removeprefix("parafill.") for p in problems))
    return remote_loader(settings, fallback=None)


def _settings(args):
    """The server's settings as the CLI runs them: one request, no deadline, no prefetch."""
    from lsp_server.config import Settings

    s = Settings()
    schedule = args.schedule or ("fixed" if args.steps is not None else s.schedule)
    return replace(
        s,
        schedule=schedule,
        steps=args.steps,
        threshold=args.threshold,
        length_estimate=args.length_estimate,
        multiline_deadline_ms=0,
        prefetch=False,
    )


def _completer(args, path: str | None = None):
    """The one completion path as the server runs it; with `--repo-context`, the repository of
    `path` indexed first (lsp_server/context/)."""
    from lsp_server.completion import Completer

    settings, context = _settings(args), None
    if path is not None and getattr(args, "repo_context", False):
        from lsp_server.context import RepoContext

        context = RepoContext.for_file(path)
        settings = replace(settings, repo_context=True)
    return Completer(_engine(args), settings, context=context)


def _ask(args, **extra):
    from lsp_server.completion import Ask

    return Ask(
        candidates=max(1, args.candidates),
        budget=args.budget,
        temperature=args.temperature,
        seed=args.seed,
        **extra,
    )


def _model_error(exc: Exception) -> CliError:
    return CliError(f"model failed: {type(exc).__name__}: {exc}")


def _parse_position(spec: str) -> tuple[str, int, int]:
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise CliError(f"position must be FILE:LINE:COL (1-based), got {spec!r}")
    return parts[0], int(parts[1]), int(parts[2])


def complete(args) -> int:
    import asyncio

    from lsp_server.syntax import Document, detect_language

    path, line, col = _parse_position(args.position)
    raw = _read(path)
    doc = Document.open(path, raw, detect_language(path))
    nlines = len(doc.line_starts)
    if not 1 <= line <= nlines:
        raise CliError(f"{path}: line {line} is outside the file (1..{nlines})")
    width = len(doc.line_text(line - 1))
    if not 1 <= col <= width + 1:
        raise CliError(f"{path}:{line}: column {col} is outside the line (1..{width + 1})")
    cursor = doc.line_starts[line - 1] + col - 1
    ask = _ask(args, want_trajectory=args.show_steps)
    done = asyncio.run(_completer(args, path).complete(doc, cursor, ask))
    if done.error is not None:
        raise _model_error(done.error)
    first = done.results[0] if done.results else None
    if args.show_steps and first is not None and first.trajectory:
        for i, step in enumerate(first.trajectory, 1):
            print(f"step {i:2d}: {step[0]!r}", file=sys.stderr)
        print(
            f"[{done.kind} region, {first.steps_used} steps, {first.tokens} tokens]",
            file=sys.stderr,
        )
        if done.context.chunks:
            print(f"[{done.context.describe()}]", file=sys.stderr)
    if done.candidates:
        best = done.candidates[0]
        text = best.text[: len(best.text) - best.extend] if best.extend else best.text
        sys.stdout.write(doc.to_editor(text, cursor))
        sys.stdout.flush()
    return 0


def fill(args) -> int:
    import asyncio

    from lsp_server.completion import apply_edits
    from lsp_server.pipeline import find_markers
    from lsp_server.syntax import Document, detect_language

    raw = _read(args.file)
    doc = Document.open(args.file, raw, detect_language(args.file))
    if not find_markers(doc.text):  # said before the model loads
        raise CliError(f"{args.file}: no <|fill|> markers in the text")
    if args.raw:
        return _fill_raw(args, raw)
    completer = _completer(args, args.file)
    try:
        filled = asyncio.run(completer.fill(doc, None, _ask(args)))
    except ValueError as exc:
        raise CliError(f"{args.file}: {exc}") from exc
    if filled.error is not None:
        raise _model_error(filled.error)
    # spliced into the file as it is, each fill with the line ending of its own line
    edits = [
        (doc.editor_offset(s), doc.editor_offset(e), doc.to_editor(f, s))
        for s, e, f in filled.edits
    ]
    out = apply_edits(doc.editor_text, edits)
    if args.in_place:
        with open(args.file, "w", encoding="utf-8", newline="") as fh:
            fh.write(out)
    else:
        sys.stdout.write(out)
        sys.stdout.flush()
    return 0


# ---- stats ---------------------------------------------------------------------------------


def stats(args) -> int:
    """Acceptance statistics from the server's log (lsp_server/acceptance.py): read locally,
    nothing is sent anywhere."""
    from lsp_server.acceptance import format_summary, summarize_log

    if args.log is None and sys.stdin.isatty():
        raise CliError("give the server's log: parafill stats --log FILE (its logFile setting)")
    name = args.log or "standard input"
    try:
        if args.log is None:
            summary = summarize_log(sys.stdin)
        else:
            with open(args.log, encoding="utf-8", errors="replace") as fh:
                summary = summarize_log(fh)
    except OSError as exc:
        raise CliError(f"{name}: {exc.strerror or exc}") from exc
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not summary["shown"]:
        print(f"no suggestion outcomes in {name} (the server logs them when logFile is set)")
    else:
        print(f"suggestions in {name} (accept rate: taken in full, of those shown)")
        print(format_summary(summary))
    return 0


# ---- status --------------------------------------------------------------------------------


def doctor(args) -> int:
    from lsp_server import doctor as checks

    found = checks.run(args.model, server=not args.no_server, family=args.model_family)
    print(checks.report(found))
    return 0 if all(c.ok for c in found) else 1


def status(args) -> int:
    from lsp_server.syntax import LANGUAGES, get_language

    engine = _engine(args, required=False)
    info = {
        "model": engine.model_name,
        "modelPath": args.model or "(shipped) model/weights/",
        "state": engine.state,
        "error": engine.error,
        "device": engine.model_device,
        "precision": getattr(engine.infiller, "precision", None),
        "loadSeconds": engine.load_seconds and round(engine.load_seconds, 2),
        "grammars": {g: get_language(g) is not None for g in LANGUAGES},
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:12s} {v}")
    if engine.state != "ready":
        print(f"parafill: error: {engine.error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def run() -> None:
    """The `parafill` command: `main`; a one-shot command runs without the cycle collector (one
    fill, then exit: nothing it frees is worth its scans) and exits without tearing down
    torch's modules and tensors (0.2 s of a 1.4 s `parafill complete`; the output is flushed
    first, and nothing of these commands waits for an atexit handler). `main` itself leaves the
    process as it found it (tests call it in-process)."""
    argv = sys.argv[1:]
    one_shot = bool(argv) and argv[0] in ONE_SHOT
    if one_shot:
        gc.disable()
    code = main(argv)
    if one_shot:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()


def _fill_raw(args, text: str) -> int:
    """`fill --raw`: the markers become holes as they are and the model's fills go in their
    place untouched (the decoding as the model does it, for comparing with a reference)."""
    from lsp_server.pipeline import find_markers
    from model.interface import Hole, InfillRequest

    segments: list = []
    at = 0
    for m in find_markers(text):
        segments += [text[at : m.start], Hole(m.budget or args.budget or RAW_BUDGET)]
        at = m.end
    segments.append(text[at:])
    req = InfillRequest(
        segments,
        steps=args.steps,
        temperature=args.temperature or 0.0,
        schedule=args.schedule,
        threshold=args.threshold,
        seed=args.seed,
        length_estimate=args.length_estimate,
        tokens_per_step=args.tokens_per_step,
    )
    try:
        results = _engine(args).infiller.infill(req)
    except ValueError as exc:
        raise CliError(f"{args.file}: {exc}") from exc
    except Exception as exc:
        raise _model_error(exc) from exc
    fills = iter(results[0].fills)
    out = "".join(s if isinstance(s, str) else next(fills) for s in segments)
    sys.stdout.write(out)
    sys.stdout.flush()
    return 0
