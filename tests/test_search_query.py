"""The query grammar and the vector arithmetic (no models needed)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from core.errors import UsageError
from search.query import MAX_QUERY_CHARS, MAX_TERMS, Term, combine, describe, parse_query


@pytest.mark.parametrize("text, expected", [
    ("golden retriever on the beach", [("golden retriever on the beach", 1)]),
    ("beach -people +sunset 2:dog", [("beach", 1), ("people", -1), ("sunset", 1), ("dog", 2)]),
    ("-0.5:snow", [("snow", -0.5)]),
    ("+2:sunset .5:dog", [("sunset", 2), ("dog", 0.5)]),
    ("t-shirt black-and-white c++", [("t-shirt black-and-white c++", 1)]),
    ("paris - eiffel tower", [("paris - eiffel tower", 1)]),
    ("meeting at 10:30", [("meeting at 10:30", 1)]),
    ("2: dog", [("2: dog", 1)]),
    ("beach, -people", [("beach", 1), ("people", -1)]),
    ('-"people walking" ', [("people walking", -1)]),
    ('"-5 degrees" snow', [("-5 degrees snow", 1)]),
    ('say "hi', [('say "hi', 1)]),
    ("dog 0:cat", [("dog", 1)]),
    ("   ", []),
    ("", []),
])
def test_grammar(text, expected):
    assert [(t.text, t.weight) for t in parse_query(text)] == [(t, float(w)) for t, w in expected]


def test_canonical_form_parses_back_to_the_same_terms():
    for text in ["beach -people +sunset 2:dog", '"-5 degrees" -0.5:snow', "a +b -c"]:
        terms = parse_query(text)
        assert parse_query(describe(terms)) == terms


def test_a_10000_character_query_is_refused_at_once():
    start = time.perf_counter()
    with pytest.raises(UsageError, match="10,000 characters"):
        parse_query("dog " * 2500)
    assert time.perf_counter() - start < 0.1
    assert parse_query("x" * MAX_QUERY_CHARS)  # the limit itself is fine


def test_too_many_terms_and_huge_weights_are_refused():
    with pytest.raises(UsageError, match="terms"):
        parse_query(" ".join(f"+t{i}" for i in range(MAX_TERMS + 1)))
    with pytest.raises(UsageError, match="weight"):
        parse_query("99999999:dog")


def test_combined_vector_is_the_normalized_weighted_sum():
    rng = np.random.default_rng(0)
    vectors = [v / np.linalg.norm(v) for v in rng.normal(size=(3, 16))]
    weights = [1.0, -1.0, 2.0]
    expected = sum(w * v for w, v in zip(weights, vectors))
    expected /= np.linalg.norm(expected)
    got = combine(list(zip(vectors, weights)))
    assert np.allclose(got, expected, atol=1e-6)
    assert got.dtype == np.float32


def test_terms_that_cancel_out_and_empty_queries_are_refused():
    v = np.ones(8) / np.sqrt(8)
    with pytest.raises(UsageError, match="cancel"):
        combine([(v, 1.0), (v, -1.0)])
    with pytest.raises(UsageError, match="empty query"):
        combine([])


def test_term_is_a_value():
    assert Term("dog", 2.0) == parse_query("2:dog")[0]
