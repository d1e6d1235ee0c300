"""The offline caption-embedding store (`llm2clip embed`): write, resume, read, verify.

    from llm2clip.embeddings import write_embedding_store, EmbeddingStore
    write_embedding_store(encoder, records, "emb/")              # sharded, resumable
    store = EmbeddingStore.open("emb/", expected_identity=..., records=records)
    store.get(sample_id, "shortSV")                               # float32 [D]

See writer.py (keys, plan, ranks, resume) and store.py (the files on disk).
"""
from ..text.tokenization import padding_fraction, plan_length_batches
from .errors import IncompleteStoreError, StoreError, StoreMismatchError
from .identity import expected_identity_of_folder, identity_differences, store_identity
from .quantize import DTYPES
from .store import EmbeddingStore
from .writer import finalize_embedding_store, write_embedding_store

__all__ = [
    "DTYPES", "EmbeddingStore", "IncompleteStoreError", "StoreError", "StoreMismatchError",
    "expected_identity_of_folder", "finalize_embedding_store", "identity_differences", "padding_fraction",
    "plan_length_batches", "store_identity", "write_embedding_store",
]
