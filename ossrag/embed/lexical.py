"""The lexical side of a chunk: the terms BM25 ranks by, from our own analyzer (lower case,
English stopwords dropped, Snowball-stemmed), so every Milvus ranks the same terms."""

from __future__ import annotations

import re

import Stemmer

_TOKEN = re.compile(r"\w+", re.UNICODE)
_stemmer = Stemmer.Stemmer("english")
# Words too common to rank by (Lucene's English list plus question words): dropping them makes
# Milvus Lite's pure-Python BM25 about 2x faster and its ranking no worse.
STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with what when where which who whom why how do does did "
    "can could should would i me my we our you your he she its am been being have has had".split()
)


def bm25_terms(text: str) -> str:
    """Lower-cased, English-stemmed word tokens: our own analyzer, so BM25 stems on every Milvus."""
    words = [word for word in _TOKEN.findall(text.lower()) if word not in STOPWORDS]
    return " ".join(_stemmer.stemWords(words))
