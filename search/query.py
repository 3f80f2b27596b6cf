"""The query grammar of the search box (rclip-style arithmetic), and how term vectors are combined.

Grammar, precisely:

* The whole text is ONE phrase unless an operator or a weight splits it: `golden retriever on the beach`
  is a single query, not five words.
* A new term starts at the beginning of the text, or after whitespace, with
    - an operator: `+` (add) or `-` (subtract), followed directly by a character that is not a space,
      `+` or `-`;  and/or
    - a weight: a plain decimal number and a colon (`2:`, `0.5:`, `.5:`), followed directly by a character
      that is not a space or a digit (so `10:30` and `2: dog` stay ordinary text).
  An operator may carry a weight: `-0.5:people`. A term without an operator adds (`2:dog` = `+2:dog`).
* Hyphens and plus signs inside words never split: `t-shirt`, `black-and-white`, `c++`; a dash between
  spaces stays text too (`paris - eiffel tower` is one phrase).
* Double quotes protect their content: `-"people walking"`, `"-5 degrees"`. The quote marks themselves
  are dropped; an unmatched quote is an ordinary character.
* Commas are ordinary characters inside a term; commas and spaces around a term are trimmed, so
  `beach, -people` is `beach` minus `people`.
* A term of weight 0 is ignored. Weights are at most MAX_WEIGHT; at most MAX_TERMS terms; the text is at
  most MAX_QUERY_CHARS characters.

Examples: `beach -people +sunset 2:dog` = beach + sunset + 2·dog − people;
`golden retriever -0.5:snow` = "golden retriever" − 0.5·"snow".

The query vector is normalize(Σ w·e(term) + Σ w·e(image)), where e() are L2-normalized embeddings and
subtracted terms carry a negative w. Text terms are embedded as `search_query: <term>`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from core.errors import UsageError

MAX_QUERY_CHARS = 1000
MAX_TERMS = 16
MAX_WEIGHT = 1000.0
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
# At a term start: optional operator, then optional weight; what may follow is checked separately.
_TERM_HEAD = re.compile(rf"(?P<op>[+-])?(?:(?P<weight>{_NUMBER}):(?=[^\s\d]))?")
_QUOTED = re.compile(r'"[^"]*"')
_TRIM = " \t\r\n\f\v,"


@dataclass(frozen=True)
class Term:
    """One part of a query. `weight` is signed: subtracted terms are negative."""
    text: str
    weight: float = 1.0


def check_length(text: str) -> None:
    if len(text) > MAX_QUERY_CHARS:
        raise UsageError(f"the query is {len(text):,} characters long; the limit is {MAX_QUERY_CHARS:,}. "
                         f"Use a few words: search works on meaning, not on whole documents")


def no_query(text: str, image=None, like: str | None = None, liked=()) -> bool:
    """No words (of weight above 0), query image, indexed photo or liked photos: the library itself is asked
    for, newest first (search/browser.py)."""
    return not parse_query(text) and image is None and not like and not liked


def parse_query(text: str) -> list[Term]:
    """Query text -> terms with signed weights (zero-weight terms dropped). Whitespace-only -> []."""
    text = text or ""
    check_length(text)
    text = text.replace("\x00", " ")
    terms = [_parse_chunk(chunk, quoted) for chunk, quoted in _split(text)]
    terms = [t for t in terms if t is not None]
    if len(terms) > MAX_TERMS:
        raise UsageError(f"the query has {len(terms)} terms; the limit is {MAX_TERMS}")
    return [t for t in terms if t.weight != 0]


def _quoted_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _QUOTED.finditer(text)]


def _inside(pos: int, spans: list[tuple[int, int]]) -> bool:
    return any(start < pos < end for start, end in spans)


def _starts_term(text: str, pos: int) -> bool:
    """True where an operator or a weight begins a new term (only at the start or after whitespace)."""
    if pos > 0 and not text[pos - 1].isspace():
        return False
    head = _TERM_HEAD.match(text, pos)
    if not head.group("op") and not head.group("weight"):
        return False
    rest = text[head.end():head.end() + 1]
    if head.group("weight"):
        return True  # the weight's lookahead already demanded a non-space, non-digit character
    return rest != "" and not rest.isspace() and rest not in "+-"


def _split(text: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """Cut the text at term starts outside quotes; each chunk keeps its quote spans (relative offsets)."""
    spans = _quoted_spans(text)
    cuts = [pos for pos in range(len(text)) if not _inside(pos, spans) and _starts_term(text, pos)]
    bounds = sorted({0, *cuts, len(text)})
    chunks = []
    for start, end in zip(bounds, bounds[1:]):
        local = [(s - start, e - start) for s, e in spans if s >= start and e <= end]
        chunks.append((text[start:end], local))
    return chunks


def _parse_chunk(chunk: str, quoted: list[tuple[int, int]]) -> Term | None:
    head = _TERM_HEAD.match(chunk)
    sign = -1.0 if head.group("op") == "-" else 1.0
    weight = float(head.group("weight")) if head.group("weight") else 1.0
    if weight > MAX_WEIGHT:
        raise UsageError(f"weight {head.group('weight')} is too large; use a weight between 0 and {MAX_WEIGHT:g}")
    body = _drop_quote_marks(chunk, quoted, head.end())
    body = body.strip(_TRIM)
    if not body:
        return None
    return Term(body, sign * weight)


def _drop_quote_marks(chunk: str, quoted: list[tuple[int, int]], start: int) -> str:
    marks = {pos for s, e in quoted for pos in (s, e - 1)}
    return "".join(ch for pos, ch in enumerate(chunk) if pos >= start and pos not in marks)


def combine(parts: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """normalize(Σ weight·vector) over L2-normalized vectors; refuses a query whose parts cancel out."""
    if not parts:
        raise UsageError("empty query: type some words, or give an image")
    total = np.zeros_like(np.asarray(parts[0][0], dtype=np.float64))
    for vector, weight in parts:
        total += weight * np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(total))
    if not np.isfinite(norm) or norm < 1e-6:
        raise UsageError("the query's terms cancel each other out; change a weight or remove a term")
    return (total / norm).astype(np.float32)


def describe(terms: list[Term]) -> str:
    """The parsed query in canonical, re-parseable form, e.g. `beach +2:dog -people` (shown back to the user)."""
    out = []
    for i, term in enumerate(terms):
        text = f'"{term.text}"' if _needs_quotes(term.text) else term.text
        body = text if abs(term.weight) == 1 else f"{abs(term.weight):g}:{text}"
        op = "-" if term.weight < 0 else ("+" if i else "")
        out.append(op + body)
    return " ".join(out)


def _needs_quotes(text: str) -> bool:
    return '"' not in text and any(_starts_term(text, pos) for pos in range(len(text)))
