"""The bottom layer every other package may import: the user-facing error type, the one image opener, and the
process settings that must be in place before torch loads (every entry point imports this package first)."""
import os

# torch's OpenMP workers (libgomp) spin after each parallel operation before they sleep: 300,000 turns by default,
# milliseconds here. On 2 cores that keeps the second core from LanceDB's threads right after a query's embedding:
# the search's first LanceDB call (counting the photos) took 1.7-2.1 ms after an embedding, 0.4-0.5 ms with 10,000
# turns (~0.5 ms), which still spin through the gaps between the operations of one forward pass (a query embedded
# in 15.0 ms against 15.1; engine search at 100k photos 28 ms against 30-32). Read once, when torch loads libgomp.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
