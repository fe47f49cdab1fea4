"""Citation numbering and structured answers' validation (pure, fast)."""

from __future__ import annotations

import json

import pytest

from ossrag.cli.chat import _source_line
from ossrag.generate.answer import Answer
from ossrag.generate.prompts import format_passage
from ossrag.generate.structured import citation_numbers, validate
from ossrag.http.chat import _footnotes
from ossrag.records import Passage


def passage(n: int) -> Passage:
    return Passage(
        rank=n, score=1.0, chunk_id=f"c{n}", source="a.md", heading="A",
        start_line=n, end_line=n, text=f"text {n}",
    )  # fmt: skip


def cited(text: str, passages: int = 3) -> list[int]:
    return Answer("q", text, "", [passage(n) for n in range(1, passages + 1)]).cited


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("Plain.", []),
        ("See [2], then [1] and [2] again.", [2, 1]),  # first use decides the order
        ("[3][1]", [3, 1]),
        ("[0] and [4] do not exist; [3] does.", [3]),  # 1..3 only
        ("[1000] is not a citation, nor [ 1 ] nor [x]; [001] is passage 1.", [1]),
        ("[1] [2] [3]", [1, 2, 3]),
    ],
)
def test_answers_cite_existing_passages_in_order_of_first_use(
    text: str, numbers: list[int]
) -> None:
    assert cited(text) == numbers


def test_without_passages_nothing_is_cited() -> None:
    assert cited("[1]", passages=0) == []
    assert Answer("q", "[1] [2]", "", [passage(1)]).to_dict()["citations"][0]["cited"] is True


def test_structured_citations_are_the_integers_of_its_list() -> None:
    assert citation_numbers({"citations": [2, "3", 1.0, None, 1, True]}) == [2, 1]
    assert citation_numbers({"citations": "1"}) == []
    assert citation_numbers({}) == []


@pytest.mark.parametrize(
    ("citations", "passages", "error"),
    [
        ([1, 2], 2, None),
        ([], 0, None),
        ([0], 2, "citations [0] do not exist: cite only passages 1 to 2"),
        ([3, 1], 2, "citations [3] do not exist: cite only passages 1 to 2"),
        ([1], 0, "citations [1] do not exist: there are no passages, cite none"),
    ],
)
def test_structured_citations_must_exist(
    citations: list[int], passages: int, error: str | None
) -> None:
    schema = {"type": "object", "properties": {"citations": {"type": "array"}}}
    text = json.dumps({"answer": "x", "citations": citations})
    if error is None:
        assert validate(text, schema, passages) == {"answer": "x", "citations": citations}
    else:
        with pytest.raises(ValueError) as raised:
            validate(text, schema, passages)
        assert str(raised.value) == error


SCHEMA = {
    "type": "object",
    "properties": {"citations": {"type": "array", "items": {"type": "integer"}}},
}


@pytest.mark.parametrize(
    "text",
    [
        '{"citations": [1]}',
        '  ```json\n{"citations": [1]}\n```  ',
        '```\n{"citations": [1]}\n```',
    ],
)
def test_a_structured_reply_may_come_fenced(text: str) -> None:
    assert validate(text, SCHEMA, 1) == {"citations": [1]}


@pytest.mark.parametrize(
    ("text", "schema", "error"),
    [
        ("nope", SCHEMA, "the reply is not valid JSON (Expecting value: line 1 column 1 (char 0))"),
        ('{"citations": "1"}', SCHEMA, "citations: '1' is not of type 'array'"),
        ('{"citations": [1, "2"]}', SCHEMA, "citations/1: '2' is not of type 'integer'"),
        ("[1]", SCHEMA, "the object: [1] is not of type 'object'"),
        ("[1]", {}, "the reply must be one JSON object"),
    ],
)
def test_a_bad_structured_reply_gets_a_reason_the_model_can_act_on(
    text: str, schema: dict[str, object], error: str
) -> None:
    with pytest.raises(ValueError) as raised:
        validate(text, schema, 2)
    assert str(raised.value) == error


def test_every_door_cites_a_passage_at_the_same_place_with_its_page() -> None:
    pdf = Passage(1, 0.9, "c1", "manual.pdf", "Backup › Restore", 40, 52, "Restore from S3.",
                  meta={"page": 7})  # fmt: skip
    expected = "manual.pdf › Backup › Restore (page 7) (lines 40-52)"
    assert pdf.location == expected
    assert format_passage(2, pdf).splitlines()[0] == f"[2] {expected}"  # what the model reads
    answer = Answer("q", "Restore it [1].", "", [pdf])
    assert _footnotes(answer) == f"\n\nSources:\n[1] {expected}"  # HTTP's footnote
    assert _source_line(1, pdf) == f"[1] {expected}"  # the CLI chat's /sources
    assert passage(2).location == "a.md › A (lines 2-2)"  # no page, no heading noise
