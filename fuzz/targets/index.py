"""The block ``index`` file as a bucket or a directory holds it (``tsdb.index.IndexReader``): TOC,
symbol table, postings offset table on open; then every postings list, every series entry (one by
one, in bulk through the C decoder, through the page cache path) as the store gateway and the
compactor read them.

Fine: :class:`CorruptBlockError` (its subclass :class:`CorruptIndexError` names block, file and
offset). Checked: the C series decoder and the Python one agree."""
from __future__ import annotations

import numpy as np

from pythanos.tsdb.errors import CorruptBlockError
from pythanos.tsdb.index import IndexReader
from pythanos.tsdb.labels import Matcher
from pythanos.tsdb.source import BytesSource

_MAX_SERIES = 256  # refs walked per input (a few KB of index hold no more)


class _PageCache:
    """An index cache that keeps what it is given (the store gateway's, in memory)."""

    def __init__(self) -> None:
        self.postings: dict = {}
        self.pages: dict = {}

    def get_postings(self, keys: list) -> dict:
        return {k: self.postings[k] for k in keys if k in self.postings}

    def put_postings(self, items: dict) -> None:
        self.postings.update(items)

    def get_series_pages(self, pages: list) -> dict:
        return {p: self.pages[p] for p in pages if p in self.pages}

    def put_series_pages(self, items: dict) -> None:
        self.pages.update(items)


def _walk(r: IndexReader) -> None:
    names = r.label_names()
    for n in names[:8]:
        for v in r.label_values(n)[:8]:
            r.postings(n, v)
            r.postings_for_matchers([Matcher("=~", n, ".+"), Matcher("!=", n, v)])
    refs = r.all_postings()[:_MAX_SERIES]
    if not len(refs):
        return
    one = [r.series(int(x)) for x in refs]
    lb, nch, ch = r.series_bulk(refs)
    assert [tuple(l) for l, _ in one] == [tuple(x) for x in lb]
    assert nch.tolist() == [len(c) for _, c in one]
    assert ch.tolist() == [list(m) for _, c in one for m in c]
    r.series_many(refs[::-1])
    r.series_bulk(refs, wire=True)


def test_one_input(data: bytes) -> None:
    """Open the index and read everything it lists, without and with a cache."""
    for cache in (None, _PageCache()):
        try:
            r = IndexReader(BytesSource(data, "index", "fuzz"), block="fuzz")
            r.cache = cache
            _walk(r)
            if cache is not None:
                _walk(r)  # now from the cache
        except CorruptBlockError:
            return
        assert isinstance(r.all_postings(), np.ndarray)
