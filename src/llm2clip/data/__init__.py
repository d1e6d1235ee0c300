"""Data: caption records, pair sampling, text pairs (the demo's own data is in llm2clip.demo)."""
