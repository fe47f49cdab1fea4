"""The `ossrag` command: a thin typer shell over `ossrag.Index`."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ossrag.config import ConfigError, Effort, Mode, Settings, load_settings
from ossrag.embeddings import EmbedderError
from ossrag.index import Index
from ossrag.ingest import Progress as IngestProgress
from ossrag.llm import ContentDelta, LLMError, ReasoningDelta
from ossrag.models import Passage
from ossrag.rag import Answer, Retrieved
from ossrag.store import StoreError

EXIT_ERROR = 1
EXIT_WARNINGS = 3  # ingest completed, but some files were skipped

app = typer.Typer(
    name="ossrag",
    help="Answer questions over your documents with gpt-oss and Milvus, locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
USER_ERRORS = (ConfigError, StoreError, EmbedderError, LLMError)

# Settings flags shared by the commands; each falls back to OSSRAG_<NAME> and the config file.
DbOpt = Annotated[
    str | None, typer.Option("--db", help="Milvus Lite path or server URI [OSSRAG_DB]")
]
TokenOpt = Annotated[str | None, typer.Option(help="Milvus server token [OSSRAG_TOKEN]")]
CollectionOpt = Annotated[str | None, typer.Option(help="collection name [OSSRAG_COLLECTION]")]
EmbedderOpt = Annotated[str | None, typer.Option(help="embedder [OSSRAG_EMBEDDER]")]
EmbedUrlOpt = Annotated[
    str | None, typer.Option(help="endpoint for openai:<model> embedders [OSSRAG_EMBED_BASE_URL]")
]
LlmOpt = Annotated[
    str | None, typer.Option("--llm", help="preset: ollama|vllm|lmstudio|llamacpp|openrouter")
]
BaseUrlOpt = Annotated[str | None, typer.Option(help="LLM base URL [OSSRAG_BASE_URL]")]
ModelOpt = Annotated[str | None, typer.Option(help="LLM model [OSSRAG_MODEL]")]
ApiKeyOpt = Annotated[str | None, typer.Option(help="LLM API key [OSSRAG_API_KEY]")]
EffortOpt = Annotated[Effort | None, typer.Option(help="reasoning effort [OSSRAG_EFFORT]")]
MaxTokensOpt = Annotated[int | None, typer.Option(help="answer + reasoning budget")]
KOpt = Annotated[int | None, typer.Option("-k", "--top-k", help="passages [OSSRAG_TOP_K]")]
ModeOpt = Annotated[Mode | None, typer.Option(help="retrieval mode [OSSRAG_MODE]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]


def _settings(**flags: Any) -> Settings:
    return load_settings(**flags)


def _fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """User errors become one red line and exit code 1, never a traceback."""
    try:
        yield
    except USER_ERRORS as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", 130) from None


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    import warnings

    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _print_json(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, ensure_ascii=False, indent=2))


def _location(p: Passage) -> str:
    where = p.source + (f" › {p.heading}" if p.heading else "")
    if page := p.meta.get("page"):
        where += f" (page {page})"
    return f"{where}  [dim]lines {p.start_line}-{p.end_line}[/]"


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or directories")],
    include: Annotated[list[str], typer.Option(help="glob to include, e.g. '*.md'")] = [],  # noqa: B006
    exclude: Annotated[list[str], typer.Option(help="glob to exclude, e.g. 'drafts/*'")] = [],  # noqa: B006
    keep_missing: Annotated[
        bool, typer.Option(help="keep chunks of files that disappeared from the directories")
    ] = False,
    db: DbOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = None,
    embedder: EmbedderOpt = None,
    embed_base_url: EmbedUrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Load, chunk, embed and store documents; re-runs only touch what changed."""
    with _user_errors():
        settings = _settings(
            db=db, token=token, collection=collection, embedder=embedder,
            embed_base_url=embed_base_url,
        )  # fmt: skip
        index = Index(settings)
        if json_output:
            report = index.ingest(paths, include=include, exclude=exclude, prune=not keep_missing)
        else:
            with Progress(
                TextColumn("[bold]ingesting"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("files · {task.fields[chunks]} chunks embedded"),
                TimeRemainingColumn(),
                console=err,
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
            err.print(f"[yellow]skipped:[/] {escape(warning)}")
    if report.skipped:
        raise typer.Exit(EXIT_WARNINGS)


@app.command()
def search(
    question: Annotated[str, typer.Argument(help="what to look for")],
    k: KOpt = None,
    mode: ModeOpt = None,
    db: DbOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = None,
    embedder: EmbedderOpt = None,
    embed_base_url: EmbedUrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Show the best passages for a question, with scores (no LLM needed)."""
    with _user_errors():
        settings = _settings(
            db=db, token=token, collection=collection, embedder=embedder,
            embed_base_url=embed_base_url, top_k=k, mode=mode,
        )  # fmt: skip
        index = Index(settings)
        result = index.search(question)
        index.close()
    if json_output:
        _print_json(
            {
                "results": [p.to_dict() for p in result.passages],
                "mode": result.mode,
                **({"notice": result.notice} if result.notice else {}),
            }
        )
        return
    if result.notice:
        err.print(f"[yellow]note:[/] {escape(result.notice)}")
    for p in result.passages:
        out.print(f"[bold cyan]{p.rank}.[/] [green]{p.score:.3f}[/]  {_location(p)}")
        out.print(escape(p.text.strip()), style="default", markup=False)
        out.print()


def _print_sources(passages: list[Passage], console: Console) -> None:
    if not passages:
        return
    table = Table(show_header=False, box=None, padding=(0, 1))
    for n, p in enumerate(passages, 1):
        table.add_row(f"[bold cyan][{n}][/]", _location(p), f"[dim]{p.score:.3f}[/]")
    console.print("[bold]Sources[/]")
    console.print(table)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="your question")],
    k: KOpt = None,
    mode: ModeOpt = None,
    effort: EffortOpt = None,
    show_reasoning: Annotated[bool, typer.Option(help="print the model's reasoning")] = False,
    db: DbOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = None,
    embedder: EmbedderOpt = None,
    embed_base_url: EmbedUrlOpt = None,
    llm: LlmOpt = None,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    api_key: ApiKeyOpt = None,
    max_tokens: MaxTokensOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Answer a question from your documents, streaming, with numbered sources."""
    passages: list[Passage] = []
    try:
        settings = _settings(
            db=db, token=token, collection=collection, embedder=embedder,
            embed_base_url=embed_base_url, top_k=k, mode=mode, effort=effort, llm=llm,
            base_url=base_url, model=model, api_key=api_key, max_tokens=max_tokens,
        )  # fmt: skip
        index = Index(settings)
        answer: Answer | None = None
        in_reasoning = False
        for event in index.ask_stream(question):
            if isinstance(event, Retrieved):
                passages = event.result.passages
                if event.result.notice and not json_output:
                    err.print(f"[yellow]note:[/] {escape(event.result.notice)}")
            elif isinstance(event, ReasoningDelta):
                if show_reasoning and not json_output:
                    if not in_reasoning:
                        err.print("[dim italic]reasoning:[/]")
                        in_reasoning = True
                    err.print(event.text, end="", style="dim italic", markup=False)
            elif isinstance(event, ContentDelta):
                if in_reasoning:
                    err.print("\n")
                    in_reasoning = False
                if not json_output:
                    out.print(event.text, end="", markup=False)
            elif isinstance(event, Answer):
                answer = event
        index.close()
    except USER_ERRORS as exc:
        if passages and not json_output:
            err.print()
            _print_sources(passages, err)
        raise _fail(str(exc)) from None
    assert answer is not None
    if json_output:
        _print_json(answer.to_dict())
        return
    out.print("\n")
    _print_sources(answer.passages, out)


@app.command()
def status(
    db: DbOpt = None,
    token: TokenOpt = None,
    collection: CollectionOpt = None,
    llm: LlmOpt = None,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    api_key: ApiKeyOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Where the store is, what it holds, and whether the LLM answers."""
    with _user_errors():
        settings = _settings(
            db=db, token=token, collection=collection, llm=llm, base_url=base_url, model=model,
            api_key=api_key,
        )  # fmt: skip
        index = Index(settings)
        report = index.status()
        index.close()
    if json_output:
        _print_json(report)
        return
    llm_state = "[green]answering[/]" if report["llm"]["ok"] else "[red]not answering[/]"
    embedder_info = report["embedder"]
    rows = [
        ("store", f"{report['db']} (collection {report['collection']})"),
        ("content", f"{report['files']} files, {report['chunks']} chunks"),
        ("embedder", f"{embedder_info['name']} ({embedder_info['dim'] or '?'}-d)"),
        ("llm", f"{report['llm']['model']} at {report['llm']['base_url']} — {llm_state}"),
        ("", f"[dim]{escape(report['llm']['detail'])}[/]"),
    ]
    table = Table(show_header=False, box=None, padding=(0, 1))
    for name, value in rows:
        table.add_row(f"[bold]{name}[/]", value)
    out.print(table)


def main() -> None:
    """Console-script entry point."""
    _quiet_libraries()
    app()
