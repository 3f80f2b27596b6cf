"""The readers' queries (search/): every query string the search engine sends to LanceDB, as methods of Store."""
from __future__ import annotations


class ReadingQueries:
    """Mixed into store.Store; `self` is the Store (self.table(name), self.meta(), ...)."""
