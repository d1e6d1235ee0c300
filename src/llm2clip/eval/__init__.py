"""Evaluation: retrieval metrics, caption retrieval accuracy."""
