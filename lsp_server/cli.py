"""The `parafill` command line: serve (LSP over stdio or 127.0.0.1 TCP), complete, fill, status.

`parafill complete FILE:LINE:COL` (1-based, as compilers print positions) prints exactly the fill on
stdout, nothing added, so prefix + output + suffix is the completed file. `parafill fill FILE`
fills every `<|fill|>` / `<|fill:N|>` marker at once. Errors print one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

from lsp_server.config import DEVICES, PRECISIONS
from model.interface import SCHEDULES

EXIT_USAGE = 2
LOCALHOST = "127.0.0.1"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line instead of usage + traceback
        raise CliError(message)


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default=None, help="checkpoint directory (default: the shipped model/weights/)"
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
        "--no-length-estimate",
        dest="length_estimate",
        action="store_false",
        help="end line fills by the PAD budget alone, without the model's length signal",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="parafill", description="Code completion from a masked-diffusion language model."
    )
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    s = sub.add_parser("serve", help="run the language server (stdio by default)")
    s.add_argument(
        "--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT instead of stdio"
    )
    s.add_argument(
        "--backend", default=None, help="Infiller factory as package.module:function(path, device)"
    )
    s.add_argument("--log-file", default=None)
    _model_options(s)

    c = sub.add_parser("complete", help="fill the region at FILE:LINE:COL and print the fill")
    c.add_argument("position", metavar="FILE:LINE:COL")
    c.add_argument(
        "--show-steps", action="store_true", help="print the span after each step on stderr"
    )
    _model_options(c)
    _sampling_options(c)

    f = sub.add_parser("fill", help="fill every <|fill|> or <|fill:N|> marker in FILE at once")
    f.add_argument("file")
    f.add_argument("--in-place", "-i", action="store_true", help="write the result back to FILE")
    _model_options(f)
    _sampling_options(f)

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
        commands["stats"] = stats
        return commands[args.cmd](args)
    except CliError as exc:
        print(f"parafill: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


# ---- serve ---------------------------------------------------------------------------------


def serve(args) -> int:
    from lsp_server.config import Settings
    from lsp_server.engine import builtin_loader, import_loader
    from lsp_server.server import create_server

    try:
        loader = import_loader(args.backend) if args.backend else builtin_loader
    except (ImportError, AttributeError, ValueError) as exc:
        raise CliError(f"cannot load backend {args.backend}: {exc}") from exc
    server = create_server(loader)
    server.settings = replace(
        Settings(),
        model_path=args.model,
        device=args.device,
        precision=args.precision,
        log_file=args.log_file,
        threads=args.threads,
    )
    if args.tcp is not None:
        server.start_tcp(LOCALHOST, args.tcp)
    else:
        from lsp_server.framing import start_io

        start_io(server)  # frames read by lsp_server/framing.py, not by pygls's reader
    # LSP: exit after shutdown is 0, without it 1 (pygls's own exit code is lost in its loop)
    return 0 if server.protocol.exit_code is None else server.protocol.exit_code


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

    engine = Engine(threads=args.threads)
    engine.load(args.model, args.device, args.precision)
    if not engine.wait_ready() and required:
        raise CliError(engine.error or "model failed to load")
    return engine


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


def _completer(args):
    from lsp_server.completion import Completer

    return Completer(_engine(args), _settings(args))


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
    done = asyncio.run(_completer(args).complete(doc, cursor, ask))
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
    completer = _completer(args)
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


if __name__ == "__main__":
    sys.exit(main())
