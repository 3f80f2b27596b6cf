"""Dynamic batching (search/batching.py): concurrent callers share forward passes and each gets its own answer.

The batcher is driven by real threads; the engine tests run a batching Engine and a plain one over the same real
index with the tiny models, and compare every caller's results.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import search.vectors as search_vectors
from search.batching import EmbedBatcher
from search.engine import Engine

QUERIES = ["red kite", "green meadow", "a birthday cake", "receipt", "mountain lake at dawn", "blue sky",
           "beach -people +sunset", "2:dog cat", "old family photo", "kids playing football", "snow", "pizza"]


class CountingEmbedder:
    """texts -> one row each (the text's length and a hash of it), remembering every call's texts."""

    def __init__(self, gate: threading.Event | None = None):
        self.calls: list[list[str]] = []
        self.gate = gate

    def __call__(self, texts):
        if self.gate is not None:
            self.gate.wait(10)  # hold the first batch until the others are queued behind it
        self.calls.append(list(texts))
        return np.asarray([[len(t), hash(t) % 997] for t in texts], np.float32)


def expected_rows(texts):
    return np.asarray([[len(t), hash(t) % 997] for t in texts], np.float32)


def run_together(batcher, requests):
    start = threading.Barrier(len(requests))

    def call(texts):
        start.wait()
        return batcher.embed(texts)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(call, requests))


def test_each_caller_gets_its_own_rows_in_order():
    embedder = CountingEmbedder()
    batcher = EmbedBatcher(embedder, wait_s=0.05)
    requests = [[q, f"{q} {i}"] for i, q in enumerate(QUERIES)]
    answers = run_together(batcher, requests)
    for texts, rows in zip(requests, answers):
        np.testing.assert_array_equal(rows, expected_rows(texts))
    embedded = [t for call in embedder.calls for t in call]
    assert sorted(embedded) == sorted(t for r in requests for t in r)  # every text embedded exactly once
    assert len(embedder.calls) < len(requests)  # and concurrent callers shared forward passes


def test_callers_that_arrive_during_a_forward_pass_form_the_next_batch():
    gate = threading.Event()
    embedder = CountingEmbedder(gate)
    batcher = EmbedBatcher(embedder, wait_s=0.0)
    first = threading.Thread(target=batcher.embed, args=(["first"],))
    first.start()
    while batcher._leader is None:  # the first caller leads and is now inside the (held) forward pass
        pass
    with ThreadPoolExecutor(8) as pool:
        later = [pool.submit(batcher.embed, [q]) for q in QUERIES[:8]]
        while len(batcher._pending) < 8:
            pass
        gate.set()
        answers = [f.result(10) for f in later]
    first.join(10)
    assert embedder.calls[0] == ["first"]
    assert sorted(embedder.calls[1]) == sorted(QUERIES[:8])  # all eight in one forward pass
    for query, rows in zip(QUERIES[:8], answers):
        np.testing.assert_array_equal(rows, expected_rows([query]))


def test_a_batch_never_exceeds_max_batch_texts():
    embedder = CountingEmbedder()
    batcher = EmbedBatcher(embedder, max_batch=4, wait_s=0.05)
    requests = [[f"{q} {i}"] for i in range(3) for q in QUERIES]
    answers = run_together(batcher, requests)
    assert max(len(call) for call in embedder.calls) <= 4
    for texts, rows in zip(requests, answers):
        np.testing.assert_array_equal(rows, expected_rows(texts))


def test_a_leader_lingers_while_callers_keep_arriving():
    """Callers coming back one by one, 20 ms apart, share one batch: each arrival extends the leader's wait."""
    embedder = CountingEmbedder()
    batcher = EmbedBatcher(embedder, wait_s=0.05, linger_s=0.3, max_wait_s=5.0)
    with ThreadPoolExecutor(5) as pool:
        answers = []
        for query in QUERIES[:5]:
            answers.append(pool.submit(batcher.embed, [query]))
            threading.Event().wait(0.02)
        for query, answer in zip(QUERIES[:5], answers):
            np.testing.assert_array_equal(answer.result(10), expected_rows([query]))
    assert embedder.calls == [QUERIES[:5]]


def test_lingering_stops_at_max_wait():
    embedder = CountingEmbedder()
    batcher = EmbedBatcher(embedder, wait_s=0.05, linger_s=0.3, max_wait_s=0.1)
    with ThreadPoolExecutor(8) as pool:
        answers = []
        for i in range(8):  # a steady stream for ~0.4 s: longer than one leader may wait
            answers.append(pool.submit(batcher.embed, [f"query {i}"]))
            threading.Event().wait(0.05)
        for i, answer in enumerate(answers):
            np.testing.assert_array_equal(answer.result(10), expected_rows([f"query {i}"]))
    assert len(embedder.calls) > 1
    assert sorted(t for call in embedder.calls for t in call) == sorted(f"query {i}" for i in range(8))


def test_the_same_text_from_two_callers_is_embedded_once():
    embedder = CountingEmbedder()
    batcher = EmbedBatcher(embedder, wait_s=0.2)
    answers = run_together(batcher, [["snow"], ["snow"], ["snow", "pizza"]])
    assert sum(call.count("snow") for call in embedder.calls) == 1
    np.testing.assert_array_equal(answers[2], expected_rows(["snow", "pizza"]))


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_still_runs():
    def failing(texts):
        if "boom" in texts:
            raise ValueError("the model failed")
        return expected_rows(texts)

    batcher = EmbedBatcher(failing, wait_s=0.2)
    start = threading.Barrier(3)

    def call(texts):
        start.wait()
        try:
            return batcher.embed(texts)
        except ValueError as exc:
            return str(exc)

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(call, [["boom"], ["snow"], ["pizza"]]))
    assert outcomes.count("the model failed") >= 2  # the failing text and whoever shared its batch
    np.testing.assert_array_equal(batcher.embed(["snow"]), expected_rows(["snow"]))


# ------------------------------------------------------------------------------------- through the engine

@pytest.fixture(scope="module")
def engines(library):
    return Engine(library.db, precision="fp32"), Engine(library.db, precision="fp32", batching=True)


def summary(results):
    return [(h.id, h.score) for h in results.hits], results.total_considered, results.has_more, \
        [(h.path, h.taken_at, h.width, h.file_time) for h in results.hits]


def test_concurrent_batched_searches_give_each_caller_the_unbatched_results(engines):
    plain, batched = engines
    expected = [summary(plain.search(q, top=10)) for q in QUERIES]
    start = threading.Barrier(len(QUERIES))

    def search(query):
        start.wait()
        return summary(batched.search(query, top=10))

    with ThreadPoolExecutor(len(QUERIES)) as pool:
        got = list(pool.map(search, QUERIES))
    for query, (hits, total, more, rows), (want_hits, want_total, want_more, want_rows) in zip(QUERIES, got, expected):
        assert [i for i, _ in hits] == [i for i, _ in want_hits], query
        np.testing.assert_allclose([s for _, s in hits], [s for _, s in want_hits], atol=1e-5)
        assert (total, more) == (want_total, want_more) and rows == want_rows
    batchers = [b.__self__ for b in batched.vectors._embedders.values() if isinstance(b.__self__, EmbedBatcher)]
    assert sum(b.batches for b in batchers) < len(QUERIES)  # the concurrent queries shared forward passes
    assert batched._searches.batches < batched._searches.items  # ... and LanceDB searches
    assert batched._reads.batches < batched._reads.items  # ... and the reads of the hits shown


def test_concurrent_batched_caption_searches_match_unbatched(engines):
    plain, batched = engines
    queries = ["receipt", "red kite", "meadow", "cake", "lake at dawn", "sunny day"]
    expected = [plain.caption_search(q, top=5) for q in queries]
    with ThreadPoolExecutor(len(queries)) as pool:
        got = list(pool.map(lambda q: batched.caption_search(q, top=5), queries))
    for hits, want in zip(got, expected):
        assert [h.text for h in hits] == [h.text for h in want]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in want], atol=1e-5)


def fake_proc(folder, running: int, own: tuple[str, ...]):
    """/proc/loadavg (three averages, running/total threads, the last pid) and /proc/self/task/*/stat."""
    (folder / "loadavg").write_text(f"0.10 0.20 0.30 {running}/412 9999\n")
    for tid, state in enumerate(own, 100):
        (folder / "task" / str(tid)).mkdir(parents=True, exist_ok=True)
        (folder / "task" / str(tid) / "stat").write_text(f"{tid} (glance (x)) {state} 1 1 1 0 -1 4194304 117 0\n")


def test_a_query_takes_a_second_core_only_while_no_other_thread_wants_one(engines, tmp_path, monkeypatch):
    vectors = engines[0].vectors
    monkeypatch.setattr(search_vectors, "LOADAVG", tmp_path / "loadavg")
    monkeypatch.setattr(search_vectors, "TASKS", tmp_path / "task")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    fake_proc(tmp_path, running=2, own=("R", "R", "S"))  # this thread and its OpenMP worker, spinning
    assert search_vectors.running_elsewhere() == 0 and search_vectors.spare_cores() == 1
    with vectors.embedding():
        assert vectors.query_threads() == 2
        on_two = vectors._embed_queries(["a red bicycle"], tuned=False)  # a nested embedding: one thread
    fake_proc(tmp_path, running=4, own=("R", "R", "S"))  # two threads of another process run: an indexer
    assert search_vectors.running_elsewhere() == 2 and search_vectors.spare_cores() == 0
    with vectors.embedding():
        assert vectors.query_threads() == 1
    np.testing.assert_allclose(vectors._embed_queries(["a red bicycle"], tuned=False), on_two, atol=1e-5)
    (tmp_path / "loadavg").write_text("unreadable")
    assert search_vectors.spare_cores() == 0  # unknown counts as busy
    monkeypatch.setattr(vectors, "fixed_threads", 3)  # Engine(threads=3)
    assert vectors.query_threads() == 3
    monkeypatch.undo()
    with vectors.embedding():
        assert vectors.query_threads() in (1, 2)  # this machine, now
