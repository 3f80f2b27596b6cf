"""SQL literals for LanceDB `where` strings: the only way a value reaches SQL (used inside store/ only)."""
from __future__ import annotations


def sql_string(value: str) -> str:
    """A user value as a SQL string literal for a LanceDB `where`: the only way user text reaches SQL."""
    if "\x00" in value:
        raise ValueError("text contains a NUL character")
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values) -> str:
    """`column IN ('a', 'b')` with every value escaped by sql_string; FALSE for no values."""
    values = list(values)
    return f"{column} IN ({', '.join(sql_string(v) for v in values)})" if values else "FALSE"
