"""Training: stage 1 (caption encoder) and stage 2 (vision tower + adaptor).

The model code (`llm2clip.text`, `llm2clip.vision`, `llm2clip.model`) never imports this.
"""
