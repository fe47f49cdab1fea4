"""The `ossrag` command: a thin typer shell over `ossrag.Index`.

Start-up stays light: a command imports the engine, the evaluation or a server when it runs, so
`ossrag --help` loads none of pymilvus, onnxruntime or openai. The settings options the commands
share are declared once, as the fields of `Flags`, and `settings_options` gives each command its
group of them.
"""

from __future__ import annotations

import functools
import gc
import inspect
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer

from ossrag.choices import Effort, Mode
from ossrag.cli.words import cli_message
from ossrag.console import shown, terminal_safe
from ossrag.errors import OssragError

if TYPE_CHECKING:
    from rich.console import Console

    from ossrag.config import Settings
    from ossrag.engine.index import Index
    from ossrag.engine.ingest import Progress as IngestProgress
    from ossrag.engine.watch import Synced
    from ossrag.eval.compare import Row as AnswerRow
    from ossrag.records import Passage
    from ossrag.store.filters import Filter

EXIT_ERROR = 1
EXIT_WARNINGS = 3  # ingest completed, but some files were skipped

app = typer.Typer(
    name="ossrag",
    help="Answer questions over your documents with gpt-oss and Milvus, locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
eval_app = typer.Typer(
    help="Measure retrieval and answers on a question set.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")


class LazyConsole:
    """A rich Console, made when first used: a command that prints JSON never loads rich
    (~20 ms of a one-shot `search --json`). Use it as the Console, or pass `.console`."""

    def __init__(self, stderr: bool = False) -> None:
        self.stderr = stderr

    @functools.cached_property
    def console(self) -> Console:
        from rich.console import Console

        return Console(stderr=self.stderr, highlight=False, soft_wrap=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


out = LazyConsole()
err = LazyConsole(stderr=True)
USER_ERRORS = (OssragError,)  # one red line and exit code 1, never a traceback


@dataclass(frozen=True)
class Flags:
    """The settings options shared by the commands, each declared once; a command gets the group
    `settings_options` names. None: not given, so `OSSRAG_<NAME>`, then the config file, decide."""

    top_k: Annotated[
        int | None,
        typer.Option("-k", "--top-k", help="passages [OSSRAG_TOP_K]"),
    ] = None
    mode: Annotated[Mode | None, typer.Option(help="retrieval mode [OSSRAG_MODE]")] = None
    effort: Annotated[Effort | None, typer.Option(help="reasoning effort [OSSRAG_EFFORT]")] = None
    db: Annotated[
        str | None, typer.Option("--db", help="Milvus Lite path or server URI [OSSRAG_DB]")
    ] = None
    token: Annotated[str | None, typer.Option(help="Milvus server token [OSSRAG_TOKEN]")] = None
    collection: Annotated[
        str | None,
        typer.Option(help="collection name [OSSRAG_COLLECTION]"),
    ] = None
    embedder: Annotated[str | None, typer.Option(help="embedder [OSSRAG_EMBEDDER]")] = None
    embed_base_url: Annotated[
        str | None,
        typer.Option(help="endpoint for openai:<model> embedders [OSSRAG_EMBED_BASE_URL]"),
    ] = None
    llm: Annotated[
        str | None, typer.Option("--llm", help="preset: ollama|vllm|lmstudio|llamacpp|openrouter")
    ] = None
    base_url: Annotated[str | None, typer.Option(help="LLM base URL [OSSRAG_BASE_URL]")] = None
    model: Annotated[str | None, typer.Option(help="LLM model [OSSRAG_MODEL]")] = None
    api_key: Annotated[str | None, typer.Option(help="LLM API key [OSSRAG_API_KEY]")] = None
    max_tokens: Annotated[int | None, typer.Option(help="answer + reasoning budget")] = None
    context_window: Annotated[
        int | None, typer.Option(help="model context in tokens [OSSRAG_CONTEXT_WINDOW]")
    ] = None
    answer_tokens: Annotated[
        int | None, typer.Option(help="tokens kept for reasoning + answer [OSSRAG_ANSWER_TOKENS]")
    ] = None


STORE = ("db", "token", "collection")
EMBED = ("embedder", "embed_base_url")
LLM = ("llm", "base_url", "model", "api_key")
BUDGET = ("max_tokens", "context_window", "answer_tokens")

Command = Callable[..., None]


@functools.cache
def _flag_types() -> dict[str, Any]:
    """`Flags`' annotations, evaluated once, not once a command (9 times: 5-10 ms)."""
    return get_type_hints(Flags, include_extras=True)


def settings_options(*names: str) -> Callable[[Command], Command]:
    """Give a command the `Flags` options `names`, in this order, where its keyword-only
    `flags: Flags` parameter is, and call it with them as that one `Flags`. A command that declares
    a parameter of one of these names keeps its own there instead (serve's repeatable
    --collection)."""
    hints = _flag_types()

    def decorate(command: Command) -> Command:
        own = inspect.signature(command, eval_str=True).parameters  # typer evaluates no strings
        shared = [name for name in names if name not in own]
        kw = inspect.Parameter.KEYWORD_ONLY
        params: list[inspect.Parameter] = []
        for param in own.values():
            if param.name == "flags":
                params += [
                    own[name].replace(kind=kw)
                    if name in own
                    else inspect.Parameter(name, kw, default=None, annotation=hints[name])
                    for name in names
                ]
            elif param.name not in names:
                params.append(param)

        @functools.wraps(command)
        def run(**given: Any) -> None:
            command(flags=Flags(**{name: given.pop(name) for name in shared}), **given)

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return run

    return decorate


JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]
# Filters: which files a search may return passages from (ossrag.store.filters).
PathOpt = Annotated[
    list[str],
    typer.Option("--path", help="only files whose path matches this glob (repeatable)"),
]
TypeOpt = Annotated[
    list[str], typer.Option("--type", help="only files of this type: md, pdf, py… (repeatable)")
]
SinceOpt = Annotated[
    str | None, typer.Option(help="only files modified since: 2026-01-31, 7d, 36h")
]


def _where(paths: list[str], types: list[str], since: str | None) -> Filter:
    from ossrag.store.filters import make_filter

    return make_filter(paths, types, since)


def _settings(flags: Flags, **more: Any) -> Settings:
    """Settings from the flags given (and `more`, the command's own), else env, else file."""
    from ossrag.config import load_settings

    return load_settings(**{**asdict(flags), **more})


def _fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    err.print(f"[bold red]error:[/] {shown(message)}")
    return typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """User errors become one red line and exit code 1, never a traceback."""
    try:
        yield
    except USER_ERRORS as exc:
        raise _fail(cli_message(exc)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", 130) from None


def _quiet_libraries() -> None:
    """Library chatter off. Transformers is quieted where a model loads (embeddings.
    quiet_offline_transformers): importing it here cost every command 1.3 s of start-up.
    numpy's OpenBLAS starts no thread pool: its threads spin ~0.1 s as it loads (a third of a
    one-shot search's CPU, taken from it on busy cores), and a search keeps BLAS on one thread
    anyway (store.memory.limit_blas_threads). A user's own setting wins."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    import warnings

    warnings.filterwarnings("ignore")


def _print_json(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, ensure_ascii=False, indent=2))


def _location(p: Passage) -> str:
    """Where a passage is, as rich markup: file › heading (page), lines dimmed."""
    return f"{shown(p.place)}  [dim]lines {p.start_line}-{p.end_line}[/]"


@app.command()
@settings_options(*STORE, *EMBED)
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or directories")],
    include: Annotated[list[str], typer.Option(help="glob to include, e.g. '*.md'")] = [],  # noqa: B006
    exclude: Annotated[list[str], typer.Option(help="glob to exclude, e.g. 'drafts/*'")] = [],  # noqa: B006
    keep_missing: Annotated[
        bool, typer.Option(help="keep chunks of files that disappeared from the directories")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="then keep syncing as files change (Ctrl-C stops)")
    ] = False,
    *,
    flags: Flags,
    json_output: JsonOpt = False,
) -> None:
    """Load, chunk, embed and store documents; re-runs only touch what changed."""
    from ossrag.engine.index import Index

    with _user_errors():
        settings = _settings(flags)
        index = Index(settings)
        if json_output:
            report = index.ingest(paths, include=include, exclude=exclude, prune=not keep_missing)
        else:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            with Progress(
                TextColumn("[bold]ingesting"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("files · {task.fields[chunks]} chunks embedded"),
                TimeRemainingColumn(),
                console=err.console,
                transient=True,
            ) as bar:
                task = bar.add_task("ingest", total=None, chunks=0)

                def on_progress(p: IngestProgress) -> None:
                    bar.update(task, total=p.files_total, completed=p.files_done,
                               chunks=p.chunks_embedded)  # fmt: skip

                report = index.ingest(
                    paths, include=include, exclude=exclude, prune=not keep_missing,
                    progress=on_progress,
                )  # fmt: skip
        if not watch:
            index.close()
    if json_output:
        _print_json(report.to_dict())
    else:
        out.print(
            f"[bold]{report.files_added}[/] added · [bold]{report.files_updated}[/] updated · "
            f"{report.files_unchanged} unchanged · {report.files_removed} removed · "
            f"{len(report.skipped)} skipped — {report.chunks_embedded} chunks embedded, "
            f"{report.chunks_deleted} deleted in {report.seconds:.1f}s → {settings.db}"
        )
        for warning in report.warnings:
            err.print(f"[yellow]skipped:[/] {shown(warning)}")
    if watch:
        with _user_errors():
            _watch(index, paths, include, exclude, prune=not keep_missing, json_output=json_output)
        return
    if report.skipped:
        raise typer.Exit(EXIT_WARNINGS)


def _watch(
    index: Index,
    paths: list[Path],
    include: list[str],
    exclude: list[str],
    *,
    prune: bool,
    json_output: bool,
) -> None:
    """Sync on every settled group of changes until Ctrl-C (see ossrag.engine.watch). The first
    Ctrl-C lets a sync under way finish; a second one interrupts it."""
    from ossrag.engine.watch import watch_and_sync

    stop = threading.Event()

    def on_interrupt(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    def on_sync(synced: Synced) -> None:
        r = synced.report
        if not (synced.changes or r.files_added or r.files_updated or r.files_removed):
            return  # the catch-up sync once the watch is armed found nothing new
        if json_output:
            print(json.dumps({"changes": synced.changes, **synced.report.to_dict()}), flush=True)
        else:
            err.print(shown(synced.status()))

    folders = ", ".join(str(p) for p in paths)
    err.print(f"[dim]watching {shown(folders)} — Ctrl-C stops[/]")
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        watch_and_sync(
            paths,
            lambda: index.ingest(paths, include=include, exclude=exclude, prune=prune),
            on_sync,
            stop,
            ignore=[] if index.settings.is_server else [Path(index.settings.db)],
        )
    finally:
        signal.signal(signal.SIGINT, previous)
        index.close()
    err.print("[dim]stopped watching[/]")


@app.command()
@settings_options("top_k", "mode", *STORE, *EMBED, *LLM)
def search(
    question: Annotated[str, typer.Argument(help="what to look for")],
    rewrite: Annotated[
        bool, typer.Option(help="add LLM-written English queries (translation, expansion)")
    ] = False,
    path: PathOpt = [],  # noqa: B006
    type_: TypeOpt = [],  # noqa: B006
    since: SinceOpt = None,
    explain: Annotated[
        bool, typer.Option(help="show each passage's rank and score in the dense and BM25 routes")
    ] = False,
    expect: Annotated[
        str | None,
        typer.Option(help="a file that should be found: where it ranked and what beat it"),
    ] = None,
    *,
    flags: Flags,
    json_output: JsonOpt = False,
) -> None:
    """Show the best passages for a question, with scores (no LLM needed)."""
    from ossrag.engine.index import Index
    from ossrag.retrieve.retriever import expect_lines, explain_line

    with _user_errors():
        settings = _settings(flags)
        where = _where(path, type_, since)
        index = Index(settings)
        result = index.search(question, rewrite=rewrite, explain=explain, where=where)
        expected = index.expect(question, expect, where=where) if expect else None
        index.close()
    if json_output:
        _print_json(
            {
                "results": [p.to_dict() for p in result.passages],
                "mode": result.mode,
                **({"notice": result.notice} if result.notice else {}),
                **({"translation": result.translation} if result.translation else {}),
                **({"expect": expected} if expected else {}),
            }
        )
        return
    if result.notice:
        err.print(f"[yellow]note:[/] {shown(result.notice)}")
    if result.translation:
        err.print(f"[dim]searched with the corpus's words:[/] {shown(result.translation)}")
    for p in result.passages:
        out.print(f"[bold cyan]{p.rank}.[/] [green]{p.score:.3f}[/]  {_location(p)}")
        if p.explain is not None:
            out.print(terminal_safe(explain_line(p.explain)), style="dim", markup=False)
        out.print(terminal_safe(p.text.strip()), style="default", markup=False)
        out.print()
    if expected:
        for line in expect_lines(expected):
            out.print(terminal_safe(line), markup=False)


def _print_sources(passages: list[Passage], console: Console) -> None:
    if not passages:
        return
    from rich.table import Table

    table = Table(show_header=False, box=None, padding=(0, 1))
    for n, p in enumerate(passages, 1):
        table.add_row(f"[bold cyan][{n}][/]", _location(p), f"[dim]{p.score:.3f}[/]")
    console.print("[bold]Sources[/]")
    console.print(table)


@app.command()
@settings_options("top_k", "mode", "effort", *STORE, *EMBED, *LLM, *BUDGET)
def ask(
    question: Annotated[str, typer.Argument(help="your question")],
    show_reasoning: Annotated[bool, typer.Option(help="print the model's reasoning")] = False,
    show_evidence: Annotated[
        bool, typer.Option(help="print each cited claim with the sentence that supports it")
    ] = False,
    *,
    flags: Flags,
    agent: Annotated[
        bool, typer.Option("--agent", help="let the model search through tools, several times")
    ] = False,
    json_schema: Annotated[
        Path | None,
        typer.Option(help="answer as JSON: {answer, citations, ...} plus this schema's fields"),
    ] = None,
    path: PathOpt = [],  # noqa: B006
    type_: TypeOpt = [],  # noqa: B006
    since: SinceOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Answer a question from your documents, streaming, with numbered sources."""
    from ossrag.cli.render import EventPrinter
    from ossrag.config import ConfigError
    from ossrag.engine.index import Index
    from ossrag.generate.answer import Answer
    from ossrag.generate.claims import report_lines
    from ossrag.generate.structured import load_schema

    passages: list[Passage] = []
    try:
        settings = _settings(flags)
        where = _where(path, type_, since)
        if json_schema is not None:
            if agent:
                raise ConfigError("use --agent or --json-schema, not both")
            schema = load_schema(json_schema)
            index = Index(settings)
            structured = index.ask_structured(question, schema, where=where)
            index.close()
            if structured.notice:
                err.print(f"[yellow]note:[/] {shown(structured.notice)}")
            _print_json(structured.to_dict())
            return
        index = Index(settings)
        printer = EventPrinter(out.console, err.console, show_reasoning, quiet=json_output)
        events = (
            index.agent_stream(question, where=where)
            if agent
            else index.ask_stream(question, where=where)
        )
        for event in events:
            printer(event)
            passages = printer.passages
        index.close()
    except USER_ERRORS as exc:
        if json_output:  # the passages found so far and the error, as one JSON object
            failed = Answer(question, "", "", passages)
            _print_json({**failed.to_dict(), "answer": None, "error": cli_message(exc)})
        elif passages:
            err.print()
            _print_sources(passages, err.console)
        raise _fail(cli_message(exc)) from None
    answer = printer.answer
    assert answer is not None
    if json_output:
        _print_json(answer.to_dict())
        return
    out.print("\n")
    if answer.notice and agent:
        err.print(f"[yellow]note:[/] {shown(answer.notice)}")
    for line, style in report_lines(answer.claims, show_evidence):
        out.print(terminal_safe(line), style=style, markup=False)
    _print_sources(answer.passages, out.console)


@app.command()
@settings_options("top_k", "mode", "effort", *STORE, *EMBED, *LLM, "max_tokens")
def chat(
    show_reasoning: Annotated[bool, typer.Option(help="print the model's reasoning")] = False,
    *,
    flags: Flags,
    path: PathOpt = [],  # noqa: B006
    type_: TypeOpt = [],  # noqa: B006
    since: SinceOpt = None,
) -> None:
    """Talk with your documents; follow-ups are understood. Reads stdin when piped."""
    from ossrag.cli.chat import HELP as CHAT_HELP
    from ossrag.cli.chat import ChatSession, input_lines
    from ossrag.cli.chat import run as run_chat
    from ossrag.engine.index import Index

    with _user_errors():
        settings = _settings(flags)
        where = _where(path, type_, since)
        index = Index(settings)
        index.store.open()  # held for the session, as a server holds it
        session = ChatSession(index, settings.effort, show_reasoning, where=where)
        err.print(f"[dim]{shown(CHAT_HELP)}[/]")
        run_chat(session, input_lines(), out.console, err.console)
        index.close()


@app.command()
@settings_options(*STORE, *LLM)
def status(*, flags: Flags, json_output: JsonOpt = False) -> None:
    """Where the store is, what it holds, and whether the LLM answers."""
    from rich.table import Table

    from ossrag.engine.index import Index

    with _user_errors():
        settings = _settings(flags)
        index = Index(settings)
        report = index.status()
        index.close()
    if json_output:
        _print_json(report)
        return
    llm_state = "[green]answering[/]" if report["llm"]["ok"] else "[red]not answering[/]"
    embedder_info = report["embedder"]
    rows = [
        ("store", shown(f"{report['db']} (collection {report['collection']})")),
        ("content", f"{report['files']} files, {report['chunks']} chunks"),
        ("embedder", f"{embedder_info['name']} ({embedder_info['dim'] or '?'}-d)"),
        *(
            (
                "collections" if n == 0 else "",
                f"{shown(c['name'])}: {c['files']} files, {c['chunks']} chunks",
            )
            for n, c in enumerate(report["collections"])
        ),
        (
            "llm",
            f"{shown(report['llm']['model'])} at {shown(report['llm']['base_url'])} — {llm_state}",
        ),
        ("", f"[dim]{shown(report['llm']['detail'])}[/]"),
    ]
    table = Table(show_header=False, box=None, padding=(0, 1))
    for name, value in rows:
        table.add_row(f"[bold]{name}[/]", value)
    out.print(table)


@eval_app.command("retrieval")
@settings_options("mode", *STORE, *EMBED, *LLM)
def eval_retrieval(
    question_set: Annotated[Path, typer.Argument(help="JSONL: question, lang, evidence, ...")],
    corpus: Annotated[
        Path | None, typer.Option(help="ingest this folder into a throwaway store first")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="passages retrieved per question")] = 10,
    baseline: Annotated[
        str | None, typer.Option(help="also run a baseline recipe: tutorial")
    ] = None,
    rewrite: Annotated[
        bool, typer.Option(help="expand/translate questions through the LLM first")
    ] = False,
    show_misses: Annotated[
        bool, typer.Option(help="list questions missed in the top 5, with each route's ranks")
    ] = False,
    html_path: Annotated[Path | None, typer.Option("--html", help="write an HTML report")] = None,
    path: PathOpt = [],  # noqa: B006
    type_: TypeOpt = [],  # noqa: B006
    since: SinceOpt = None,
    *,
    flags: Flags,
    json_output: JsonOpt = False,
) -> None:
    """Recall@1/3/5/10, MRR@10 and latency of retrieval on a question set."""
    from rich.table import Table

    from ossrag.eval.report import retrieval_html, run_info
    from ossrag.eval.retrieval import RECALL_AT, EvalError, load_items, retrieval_reports
    from ossrag.retrieve.retriever import expect_lines

    with _user_errors():
        settings = _settings(flags)
        items = load_items(question_set)
        if corpus is not None and not corpus.is_dir():
            raise EvalError(f"--corpus {corpus}: not a directory")
        if not json_output:
            err.print(f"[dim]{len(items)} questions; preparing stores…[/]")
        reports = retrieval_reports(
            settings, items, corpus=corpus, k=k, baseline=baseline, rewrite=rewrite,
            where=_where(path, type_, since),
            explain_misses=show_misses,
        )  # fmt: skip
    summaries = {report.name: report.summary() for report in reports}
    if html_path is not None:
        info = run_info(
            settings, question_set, len(items), recipes=", ".join(summaries),
            corpus=str(corpus) if corpus else "the configured store", k=str(k),
            rewrite="on" if rewrite else "off",
        )  # fmt: skip
        page = retrieval_html(reports, f"ossrag retrieval: {question_set.name}", info)
        html_path.write_text(page, "utf-8")
        if not json_output:
            err.print(f"[dim]report: {html_path}[/]")
    if json_output:
        payload = dict(summaries["ossrag"])
        if len(reports) > 1:
            payload["baselines"] = {name: s for name, s in summaries.items() if name != "ossrag"}
        if show_misses:
            payload["misses"] = {report.name: report.misses() for report in reports}
        _print_json(payload)
        return
    table = Table(title=f"retrieval on {question_set.name} (n={len(items)})")
    table.add_column("metric")
    for name in summaries:
        table.add_column(name, justify="right")
    keys = [f"recall@{n}" for n in RECALL_AT] + ["mrr@10"]
    for key in keys:
        table.add_row(key, *(f"{s[key]:.3f}" for s in summaries.values()))
    langs = sorted({lang for s in summaries.values() for lang in s["by_lang"]})
    if len(langs) > 1:
        for lang in langs:
            for key in ("recall@5", "mrr@10"):
                table.add_row(
                    f"{lang} {key}",
                    *(f"{s['by_lang'].get(lang, {}).get(key, 0):.3f}" for s in summaries.values()),
                )
    for key in ("p50", "p95"):
        table.add_row(
            f"latency {key} ms", *(f"{s['latency_ms'][key]:.1f}" for s in summaries.values())
        )
    out.print(table)
    for report in reports:
        if report.notice:
            err.print(f"[yellow]note:[/] {report.name}: {shown(report.notice)}")
    if show_misses:
        for report in reports:
            for miss in report.misses():
                out.print(
                    f"[bold]{report.name}[/] {miss['id']} (rank {miss['rank']}): "
                    f"{shown(miss['question'])}\n  expected {miss['expected']}; got "
                    + "; ".join(shown(g) for g in miss["got"])
                )
                for line in expect_lines(miss["expect"]) if "expect" in miss else []:
                    out.print("  " + terminal_safe(line), markup=False)


@eval_app.command("answers")
@settings_options("top_k", "mode", *STORE, *EMBED, "base_url", "api_key", "max_tokens")
def eval_answers(
    question_set: Annotated[Path, typer.Argument(help="JSONL: question, evidence, answer, ...")],
    models: Annotated[
        list[str], typer.Option("--model", help="model to compare (repeat for several)")
    ],
    judge_model: Annotated[
        str | None, typer.Option("--judge", help="model scoring correctness + faithfulness")
    ] = None,
    efforts: Annotated[str, typer.Option("--effort", help="comma-separated efforts")] = "medium",
    limit: Annotated[int | None, typer.Option(help="only the first N questions")] = None,
    cache: Annotated[
        Path | None, typer.Option(help="JSONL of finished answers: re-runs resume from it")
    ] = None,
    html_path: Annotated[Path | None, typer.Option("--html", help="write an HTML report")] = None,
    *,
    flags: Flags,
    json_output: JsonOpt = False,
) -> None:
    """Compare models and reasoning efforts on a question set: quality, speed, citations."""
    from rich import box
    from rich.table import Table

    from ossrag.config import ConfigError
    from ossrag.engine.index import Index
    from ossrag.eval.compare import answers_cache_path, effort_notes
    from ossrag.eval.compare import compare as compare_answers
    from ossrag.eval.compare import summarise as summarise_answers
    from ossrag.eval.report import answers_html, fmt, run_info
    from ossrag.eval.retrieval import load_items
    from ossrag.generate.llm import EFFORTS

    with _user_errors():
        wanted = [e.strip() for e in efforts.split(",") if e.strip()]
        if not wanted or any(e not in EFFORTS for e in wanted):
            raise ConfigError(f"--effort {efforts!r}: use some of {','.join(EFFORTS)}")
        settings = _settings(flags)
        items = load_items(question_set)[:limit]
        cache = cache or answers_cache_path(settings, question_set)
        if not json_output:
            err.print(f"[dim]{len(items)} questions · cache {cache}[/]")
        index = Index(settings)

        def show(row: AnswerRow) -> None:
            if not json_output:
                mark = "[green]hit[/]" if row.citation_hit else "[red]miss[/]"
                err.print(f"[dim]{shown(row.model)} {row.effort} {shown(row.id)}[/] {mark}")

        rows = compare_answers(
            index, items, models, wanted, judge_model=judge_model, cache=cache, progress=show
        )
        index.close()
    summary = summarise_answers(rows)
    if html_path is not None:
        info = run_info(
            settings, question_set, len(items), models=", ".join(models),
            efforts=", ".join(wanted), judge=judge_model or "none",
        )  # fmt: skip
        page = answers_html(rows, summary, f"ossrag answers: {question_set.name}", info)
        html_path.write_text(page, "utf-8")
    notes = effort_notes(summary)
    if json_output:
        _print_json({"summary": summary, "notes": notes, "rows": [asdict(r) for r in rows]})
        return
    for note in notes:
        err.print(f"[yellow]note:[/] {shown(note)}")
    # Fits 80 columns: two-line headers, no vertical rules, long model names wrap (--json: whole).
    table = Table(
        title=f"answers on {question_set.name} (n={len(items)})",
        box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False,
    )  # fmt: skip
    columns = {"model": ("model", "text"), "effort": ("effort", "text"),
               "citation_hit": ("cited\nok", "rate"), "correctness": ("cor-\nrect", "score"),
               "faithfulness": ("faith-\nful", "score"), "ttft_ms_p50": ("TTFT\nms", "ms"),
               "total_ms_p50": ("total\nms", "ms"), "tokens_per_s": ("tok/s", "speed"),
               "reasoning_chars": ("reas.\nchars", "int"), "errors": ("err", "int")}  # fmt: skip
    for key, (header, _) in columns.items():
        table.add_column(
            header, justify="left" if key in ("model", "effort") else "right", overflow="fold",
            min_width=12 if key == "model" else None, no_wrap=key != "model",
        )  # fmt: skip
    for s in summary:
        table.add_row(*(shown(fmt(s[key], kind)) for key, (_, kind) in columns.items()))
    out.print(table)
    # The claim checks (ossrag.generate.claims), as shares of the cited claims, on a line each:
    # the table has no room left at 80 columns.
    for s in summary:
        if s["citation_precision"] is not None:
            out.print(
                f"claims {shown(s['model'])} {s['effort']}: "
                f"{fmt(s['citation_precision'], 'rate')} supported, "
                f"{fmt(s['unsupported_rate'], 'rate')} unsupported",
                soft_wrap=False,  # a long model name: wrapped at a space within 80 columns
            )
    if html_path is not None:
        err.print(f"[dim]report: {html_path}[/]")


@app.command()
@settings_options("top_k", "mode", "effort", *STORE, *EMBED, *LLM, "max_tokens")
def serve(
    host: Annotated[str | None, typer.Option(help="address to bind [OSSRAG_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [OSSRAG_PORT]")] = None,
    api_keys: Annotated[
        str | None, typer.Option(help="comma-separated client keys [OSSRAG_API_KEYS]")
    ] = None,
    api_keys_file: Annotated[
        str | None, typer.Option(help="file with one client key a line [OSSRAG_API_KEYS_FILE]")
    ] = None,
    allowed_root: Annotated[
        list[str], typer.Option(help="directory POST /v1/ingest may read (repeatable)")
    ] = [],  # noqa: B006
    cors_origin: Annotated[
        list[str], typer.Option(help="origin allowed by CORS (repeatable; default: CORS off)")
    ] = [],  # noqa: B006
    allowed_host: Annotated[
        list[str],
        typer.Option(help="Host header name to answer besides loopback and --host (repeatable)"),
    ] = [],  # noqa: B006
    insecure: Annotated[
        bool, typer.Option("--insecure", help="allow a non-loopback host without API keys")
    ] = False,
    watch: Annotated[
        list[str], typer.Option(help="directory to keep in sync as its files change (repeatable)")
    ] = [],  # noqa: B006
    request_timeout: Annotated[
        float | None, typer.Option(help="seconds a request may take [OSSRAG_REQUEST_TIMEOUT]")
    ] = None,
    collection: Annotated[
        list[str],
        typer.Option(help="collection served as model ossrag/<name> (repeatable; first: default)"),
    ] = [],  # noqa: B006
    *,
    flags: Flags,
) -> None:
    """Serve an OpenAI-compatible RAG API (/v1/chat/completions, /docs) and a web UI (/)."""
    with _user_errors():
        settings = _settings(
            flags, host=host, port=port, api_keys=api_keys, api_keys_file=api_keys_file,
            allowed_roots=allowed_root or None, cors_origins=cors_origin or None,
            allowed_hosts=allowed_host or None, watch=watch or None, insecure=insecure or None,
            request_timeout=request_timeout, collection=collection[0] if collection else None,
            collections=collection or None,
        )  # fmt: skip
        from ossrag.http.app import serve as run_server  # FastAPI loads only for this command

        run_server(settings)


@app.command("mcp")
@settings_options("top_k", "mode", "effort", *STORE, *EMBED, *LLM)
def mcp_stdio(
    ask: Annotated[
        bool | None,
        typer.Option("--ask/--no-ask", help="offer the ask tool [default: if the LLM answers]"),
    ] = None,
    *,
    flags: Flags,
) -> None:
    """Serve the index to MCP clients (Claude Desktop, Cursor, VS Code) over stdio."""
    from ossrag.engine.index import Index
    from ossrag.mcp.server import build_mcp_server, serve_stdio

    with _user_errors():
        settings = _settings(flags)
        index = Index(settings)
        try:
            with redirect_stdout(sys.stderr):  # stdout is the protocol's alone
                index.embedder.embed_query("warm up")
                index.store.open()
                if ask is None:
                    ask, detail = index.llm.check()
                    if not ask:
                        err.print(f"[dim]no ask tool: LLM not answering: {shown(detail)}[/]")
            serve_stdio(build_mcp_server(index, ask=ask))
        finally:
            index.close()


# Start-up (typer, pydantic, numpy, ONNX Runtime, the engine) allocates ~10^6 objects that live
# as long as the process and no garbage: the collector's ~130 passes over them took 50-100 ms of
# a one-shot search. It is off for a command's first START_UP_SECONDS.
START_UP_SECONDS = 2.0


def collect_after_start_up(seconds: float = START_UP_SECONDS) -> threading.Timer:
    """Turn the garbage collector off now and back on after `seconds`, with what exists by then
    frozen (left out of every later pass: a long-running command's full collections skip it)."""

    def resume() -> None:
        gc.freeze()
        gc.enable()

    gc.disable()
    timer = threading.Timer(seconds, resume)
    timer.daemon = True
    timer.start()
    return timer


def main() -> None:
    """Console-script entry point."""
    collect_after_start_up()
    _quiet_libraries()
    try:
        app()
    finally:  # the interpreter's last collection, as it exits, skips what is frozen
        gc.freeze()
