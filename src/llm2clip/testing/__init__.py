"""Fixtures for the tests and the performance scripts (`benchmarks/`), never used by the
library itself: random-initialised LLMs with a small local tokenizer (random_llm.py)."""
