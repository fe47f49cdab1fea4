"""Self-contained HTML reports of `eval answers` and `eval retrieval`: one file, no network.

Each page holds the run's settings, a summary table sortable in the browser (— for a missing
value, one number format per kind, units in the headers), hand-drawn SVG charts (quality
against latency; per-language bars) and a drill-down per question. Answers are rendered from
markdown with raw HTML escaped and unsafe links dropped (markdown-it's defaults).
"""

from __future__ import annotations

import html
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markdown_it import MarkdownIt

from ossrag.config import Settings

if TYPE_CHECKING:
    from ossrag.eval.compare import Row
    from ossrag.eval.retrieval import EvalReport

MISSING = "—"
PALETTE = ("#2952c8", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0b7285", "#c2255c", "#5c940d")
# Raw HTML is escaped and images stay text: a report never loads anything.
_markdown = MarkdownIt("commonmark", {"html": False}).enable("table").disable("image")


# --------------------------------------------------------------------------- numbers


def fmt(value: Any, kind: str) -> str:
    """One format per kind of number; None (or NaN) is an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if kind == "rate":
        return f"{value:.3f}"
    if kind == "score":
        return f"{value:.2f}"
    if kind == "ms":
        return f"{value:,.0f}"
    if kind in ("speed", "one"):
        return f"{value:,.1f}"
    if kind == "int":
        return f"{int(value):,}"
    return str(value)


@dataclass(frozen=True)
class Column:
    key: str
    label: str  # with its unit
    kind: str  # a fmt kind, or "text"
    help: str = ""


def run_info(settings: Settings, question_set: Path, n: int, **extra: str) -> dict[str, str]:
    """The settings a reader needs to reproduce or trust the run."""
    return {
        "question set": f"{question_set.name} ({n} questions)",
        **extra,
        "embedder": settings.embedder,
        "retrieval": f"{settings.mode}, top {settings.top_k}",
        "store": f"{settings.db} (collection {settings.collection})",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --------------------------------------------------------------------------- page parts


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def sortable_table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> str:
    """A table the page's script sorts by any column (missing values always last)."""
    head = "".join(
        f'<th scope="col" aria-sort="none" title="{_e(c.help or c.label)}; click to sort"'
        f' class="{"text" if c.kind == "text" else "num"}">'
        f'<button type="button">{_e(c.label)}</button></th>'
        for c in columns
    )
    body = []
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c.key)
            sort = "" if value is None else _e(value)
            klass = "text" if c.kind == "text" else "num"
            cells.append(f'<td class="{klass}" data-sort="{sort}">{_e(fmt(value, c.kind))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="table-wrap"><table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def settings_list(info: Mapping[str, str]) -> str:
    items = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in info.items())
    return f'<dl class="settings">{items}</dl>'


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    return [start + i * step for i in range(math.ceil((high - start) / step) + 1)]


def _text_width(text: str, size: float = 12) -> float:
    return len(text) * size * 0.58


@dataclass(frozen=True)
class Point:
    label: str
    x: float
    y: float
    color: str


def scatter_svg(
    points: Sequence[Point], x_label: str, y_label: str, y_range: tuple[float, float] | None
) -> str:
    """A scatter plot whose labels never overlap one another (nudged apart vertically)."""
    if not points:
        return '<p class="muted">No data to plot.</p>'
    width, height, left, right, top, bottom = 760, 380, 64, 24, 16, 52
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = _ticks(0, max(p.x for p in points) * 1.1)
    y_low, y_high = y_range or (0.0, max(p.y for p in points) * 1.1 or 1.0)
    ys = _ticks(y_low, y_high)
    x_max, y_min, y_max = xs[-1], ys[0], ys[-1]

    def sx(x: float) -> float:
        return left + plot_w * x / x_max

    def sy(y: float) -> float:
        return top + plot_h * (1 - (y - y_min) / (y_max - y_min))

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(y_label)} against {_e(x_label)}">'
    ]
    for x in xs:
        parts.append(
            f'<line class="grid" x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{top + plot_h}"/>'
            f'<text class="tick" x="{sx(x):.1f}" y="{top + plot_h + 18}" text-anchor="middle">'
            f"{_e(fmt(x, 'ms') if x_max >= 100 else f'{x:g}')}</text>"
        )
    for y in ys:
        parts.append(
            f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{sy(y):.1f}" '
            f'y2="{sy(y):.1f}"/>'
            f'<text class="tick" x="{left - 8}" y="{sy(y) + 4:.1f}" text-anchor="end">'
            f"{_e(f'{y:g}')}</text>"
        )
    parts.append(
        f'<text class="axis" x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">'
        f"{_e(x_label)}</text>"
        f'<text class="axis" transform="translate(16 {top + plot_h / 2}) rotate(-90)" '
        f'text-anchor="middle">{_e(y_label)}</text>'
    )
    dots = [(sx(p.x), sy(p.y)) for p in points]
    boxes: list[tuple[float, float, float, float]] = []  # x0, y0, x1, y1 of placed labels

    def free(x0: float, y0: float, w: float) -> bool:
        """Whether a label box stays in the chart and clear of other labels and of dots."""
        x1, y1 = x0 + w, y0 + 14
        if x0 < left or x1 > width - 2 or y0 < 0 or y1 > top + plot_h + 4:
            return False
        if any(x0 < bx1 and x1 > bx0 and y0 < by1 and y1 > by0 for bx0, by0, bx1, by1 in boxes):
            return False
        return not any(x0 - 6 < dx < x1 + 6 and y0 - 6 < dy < y1 + 6 for dx, dy in dots)

    for p in sorted(points, key=lambda p: (-p.y, p.x)):
        cx, cy = sx(p.x), sy(p.y)
        parts.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5.5" fill="{p.color}">'
            f"<title>{_e(p.label)}: {_e(p.x)}, {_e(p.y)}</title></circle>"
        )
        w = _text_width(p.label)
        # Beside the dot (right, then left), else ever further below or above it.
        candidates = [(cx + 9, cy - 7), (cx - 9 - w, cy - 7)] + [
            (x, cy - 7 + dy)
            for step in range(1, 12)
            for dy in (14 * step, -14 * step)
            for x in (cx + 9, cx - 9 - w, cx - w / 2)
        ]
        x0, y0 = next(((x, y) for x, y in candidates if free(x, y, w)), candidates[0])
        boxes.append((x0, y0, x0 + w, y0 + 14))
        if abs(y0 - (cy - 7)) > 1:
            edge = min(max(cx, x0), x0 + w)
            parts.append(
                f'<line class="leader" x1="{cx:.1f}" y1="{cy:.1f}" '
                f'x2="{edge:.1f}" y2="{y0 + (14 if y0 < cy else 0):.1f}"/>'
            )
        parts.append(f'<text class="label" x="{x0:.1f}" y="{y0 + 11:.1f}">{_e(p.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(
    groups: Mapping[str, Mapping[str, float | None]], value_label: str, colors: Mapping[str, str]
) -> str:
    """Horizontal grouped bars: one group per language, one bar per series, values printed."""
    series = list(colors)
    bar, gap = 16, 14
    label_w = 150
    width = 760
    plot_w = width - label_w - 70
    parts: list[str] = []
    y = 10
    for group, values in groups.items():
        parts.append(
            f'<text class="label" x="{label_w - 10}" y="{y + len(series) * bar / 2 + 4}" '
            f'text-anchor="end">{_e(group)}</text>'
        )
        for name in series:
            value = values.get(name)
            w = plot_w * value if value else 0 if value is None else 2  # a stub shows a zero
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar - 3}" '
                f'fill="{colors[name]}"><title>{_e(name)} · {_e(group)}: '
                f"{_e(fmt(value, 'rate'))}</title></rect>"
                f'<text class="tick" x="{label_w + w + 6:.1f}" y="{y + bar - 5}">'
                f"{_e(fmt(value, 'rate'))}</text>"
            )
            y += bar
        y += gap
    legend_x: float = label_w
    for name in series:
        w = _text_width(name) + 30
        if legend_x + w > width:
            legend_x, y = label_w, y + 20
        parts.append(
            f'<rect x="{legend_x}" y="{y}" width="12" height="12" fill="{colors[name]}"/>'
            f'<text class="label" x="{legend_x + 17}" y="{y + 11}">{_e(name)}</text>'
        )
        legend_x += w
    height = y + 40
    parts.append(
        f'<text class="axis" x="{label_w + plot_w / 2}" y="{height - 4}" text-anchor="middle">'
        f"{_e(value_label)}</text></svg>"
    )
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(value_label)} per language">' + "".join(parts)
    )


def page(title: str, info: Mapping[str, str], sections: Sequence[tuple[str, str]]) -> str:
    """The whole document: settings first, then each (heading, html) section."""
    body = "".join(f"<section><h2>{_e(h)}</h2>{content}</section>" for h, content in sections)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_asset('report.css')}</style></head><body><main>"
        f"<h1>{_e(title)}</h1>{settings_list(info)}{body}</main>"
        f"<script>{_asset('report.js')}</script>"
        "</body></html>"
    )


def _asset(name: str) -> str:
    return (Path(__file__).parents[1] / "http" / "web" / name).read_text(encoding="utf-8")


def _answer_html(text: str) -> str:
    return _markdown.render(text) if text.strip() else f'<p class="muted">{MISSING}</p>'


# --------------------------------------------------------------------------- eval answers

ANSWER_COLUMNS = [
    Column("model", "model", "text"),
    Column("effort", "effort", "text"),
    Column("n", "questions", "int"),
    Column("citation_hit", "cited evidence (rate)", "rate", "a cited passage holds the evidence"),
    Column("correctness", "correct (1–5)", "score", "judge: agrees with the reference"),
    Column("faithfulness", "faithful (1–5)", "score", "judge: every claim in the passages"),
    Column("ttft_ms_p50", "TTFT p50 (ms)", "ms", "median time to the first token"),
    Column("total_ms_p50", "answer p50 (ms)", "ms", "time to the whole answer, retrieval excluded"),
    Column("tokens_per_s", "speed (tok/s)", "speed"),
    Column("reasoning_chars", "reasoning (chars)", "int"),
    Column(
        "citation_precision",
        "supported claims (rate)",
        "rate",
        "cited claims their passages support (ossrag.generate.claims)",
    ),
    Column(
        "unsupported_rate", "unsupported claims (rate)", "rate", "cited claims no passage supports"
    ),
    Column("errors", "errors", "int"),
]


def _series_colors(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(dict.fromkeys(names))}


def answers_html(
    rows: Sequence[Row], summary: Sequence[dict[str, Any]], title: str, info: Mapping[str, str]
) -> str:
    """The `eval answers` report."""
    judged = any(s["correctness"] is not None for s in summary)
    metric = "correctness" if judged else "citation_hit"
    labels = {(s["model"], s["effort"]): f"{s['model']} · {s['effort']}" for s in summary}
    colors = _series_colors(list(labels.values()))
    points = [
        Point(labels[s["model"], s["effort"]], s["total_ms_p50"], s[metric], "")
        for s in summary
        if s["total_ms_p50"] is not None and s[metric] is not None
    ]
    points = [Point(p.label, p.x, p.y, colors[p.label]) for p in points]
    y_label = "judge correctness (1–5)" if judged else "cited evidence (rate)"
    chart = scatter_svg(
        points, "median answer time (ms)", y_label, (1.0, 5.0) if judged else (0.0, 1.0)
    )
    missing = [label for label in labels.values() if label not in {p.label for p in points}]
    if missing:
        chart += f'<p class="muted">Not plotted (no value): {_e(", ".join(missing))}</p>'
    sections = [
        ("Summary", sortable_table(ANSWER_COLUMNS, summary)),
        ("Quality against latency", chart),
    ]
    langs = sorted({r.lang for r in rows if r.lang})
    if len(langs) > 1:
        hits: dict[tuple[str, str], list[float]] = {}
        for r in rows:
            if not r.error:
                hits.setdefault((r.lang, labels[r.model, r.effort]), []).append(r.citation_hit)
        groups = {
            lang: {
                label: statistics.fmean(h) if (h := hits.get((lang, label))) else None
                for label in labels.values()
            }
            for lang in langs
        }
        sections.append(
            ("Cited evidence per language", bars_svg(groups, "cited evidence (rate)", colors))
        )
    sections.append(("Questions", _answer_drilldown(rows)))
    return page(title, info, sections)


def _answer_drilldown(rows: Sequence[Row]) -> str:
    by_question: dict[str, list[Row]] = {}
    for row in rows:
        by_question.setdefault(row.id, []).append(row)
    out = []
    for qid, group in by_question.items():
        first = group[0]
        marks = "".join(
            f'<span class="badge {"ok" if r.citation_hit else "bad"}" '
            f'title="{_e(r.model)} · {_e(r.effort)}">{"✓" if r.citation_hit else "✗"}</span>'
            for r in group
        )
        answers = "".join(_answer_block(r) for r in group)
        reference = (
            f'<div class="reference"><strong>Reference answer</strong>'
            f"{_answer_html(first.reference)}</div>"
            if first.reference
            else ""
        )
        out.append(
            f'<details class="question"><summary><span class="qid">{_e(qid)}</span>'
            f"{f'<span class=lang>{_e(first.lang)}</span>' if first.lang else ''}"
            f'<span class="qtext">{_e(first.question)}</span><span class="marks">{marks}</span>'
            f"</summary>{reference}{answers}</details>"
        )
    return "".join(out)


def _out_of_5(score: int | None) -> str:
    return MISSING if score is None else f"{score}/5"


def _answer_block(r: Row) -> str:
    facts = " · ".join(
        [
            f"cited evidence {'✓' if r.citation_hit else '✗'}",
            f"correct {_out_of_5(r.correctness)}",
            f"faithful {_out_of_5(r.faithfulness)}",
            f"first token {fmt(r.ttft_ms or None, 'ms')} ms",
            f"answer {fmt(r.total_ms or None, 'ms')} ms",
            f"{fmt(r.tokens_per_s, 'speed')} tok/s",
        ]
    )
    body = (
        f'<p class="error">{_e(r.error)}</p>'
        if r.error
        else f'<div class="md">{_answer_html(r.answer)}</div>'
    )
    reasoning = (
        f'<details class="reasoning"><summary>Reasoning ({fmt(r.reasoning_chars, "int")} chars)'
        f"</summary><pre>{_e(r.reasoning)}</pre></details>"
        if r.reasoning
        else ""
    )
    passages = "".join(
        f'<details class="passage"><summary>[{p["n"]}] '
        f"{_e(' › '.join(filter(None, [p['source'], p.get('heading')])))} · lines "
        f"{p['start_line']}–{p['end_line']}</summary><pre>{_e(p['text'])}</pre></details>"
        for p in r.passages
    )
    rationale = (
        f'<p class="rationale"><strong>Judge:</strong> {_e(r.rationale)}</p>' if r.rationale else ""
    )
    return (
        f'<div class="answer-block"><h3>{_e(r.model)} <span class="muted">· {_e(r.effort)}</span>'
        f'</h3><p class="facts muted">{_e(facts)}</p>{reasoning}{body}'
        f"{f'<div class=passages>{passages}</div>' if passages else ''}{rationale}</div>"
    )


# --------------------------------------------------------------------------- eval retrieval

RETRIEVAL_COLUMNS = [
    Column("recipe", "recipe", "text"),
    Column("n", "questions", "int"),
    Column("recall@1", "recall@1", "rate"),
    Column("recall@3", "recall@3", "rate"),
    Column("recall@5", "recall@5", "rate"),
    Column("recall@10", "recall@10", "rate"),
    Column("mrr@10", "MRR@10", "rate"),
    Column("p50", "latency p50 (ms)", "one"),
    Column("p95", "latency p95 (ms)", "one"),
]


def retrieval_html(reports: Sequence[EvalReport], title: str, info: Mapping[str, str]) -> str:
    """The `eval retrieval` report: every recipe (ossrag and any baseline) side by side."""
    summaries = {r.name: r.summary() for r in reports}
    rows = [
        {"recipe": name, **{k: v for k, v in s.items() if k != "by_lang"}, **s["latency_ms"]}
        for name, s in summaries.items()
    ]
    colors = _series_colors(list(summaries))
    points = [
        Point(name, s["latency_ms"]["p50"], s["mrr@10"], colors[name])
        for name, s in summaries.items()
    ]
    sections = [
        ("Summary", sortable_table(RETRIEVAL_COLUMNS, rows)),
        (
            "Quality against latency",
            scatter_svg(points, "median search time (ms)", "MRR@10", (0.0, 1.0)),
        ),
    ]
    langs = sorted({lang for s in summaries.values() for lang in s["by_lang"]})
    if langs:
        groups = {
            lang: {
                name: s["by_lang"].get(lang, {}).get("recall@5") for name, s in summaries.items()
            }
            for lang in langs
        }
        sections.append(("Recall@5 per language", bars_svg(groups, "recall@5", colors)))
    sections.append(("Questions", _retrieval_drilldown(reports)))
    return page(title, info, sections)


def _rank_badge(rank: int | None) -> str:
    if rank is None:
        return '<span class="badge bad">miss</span>'
    return f'<span class="badge {"ok" if rank <= 5 else "warn"}">#{rank}</span>'


def _retrieval_drilldown(reports: Sequence[EvalReport]) -> str:
    out = []
    for i, outcome in enumerate(reports[0].outcomes):
        item = outcome.item
        per_recipe = [(r.name, r.outcomes[i]) for r in reports]
        marks = "".join(
            f'<span class="mark" title="{_e(name)}">{_e(name)} {_rank_badge(o.rank)}</span>'
            for name, o in per_recipe
        )
        lists = "".join(
            f"<h3>{_e(name)} <span class=muted>· {fmt(o.seconds * 1000, 'one')} ms</span></h3><ol>"
            + "".join(
                f'<li class="{"relevant" if rank == o.rank else ""}">'
                f"{_e(p.place)} · lines "
                f"{p.start_line}–{p.end_line}"
                f"{' <strong>(holds the evidence)</strong>' if rank == o.rank else ''}</li>"
                for rank, p in enumerate(o.top[:5], 1)
            )
            + "</ol>"
            for name, o in per_recipe
        )
        evidence = "".join(f"<li><q>{_e(e)}</q></li>" for e in item.evidence)
        out.append(
            f'<details class="question"><summary><span class="qid">{_e(item.id)}</span>'
            f'<span class="lang">{_e(item.lang)}</span><span class="qtext">{_e(item.question)}'
            f'</span><span class="marks">{marks}</span></summary>'
            f'<p class="muted">Expected source: {_e(item.source or MISSING)}</p>'
            f"<p><strong>Evidence</strong></p><ul>{evidence}</ul>{lists}</details>"
        )
    return "".join(out)
