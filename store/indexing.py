"""The writer's queries (indexer/): every query string the indexer sends to LanceDB, as methods of Store."""
from __future__ import annotations


class IndexingQueries:
    """Mixed into store.Store; `self` is the Store (self.table(name), self.meta(), ...)."""
