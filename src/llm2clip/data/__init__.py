"""Data: caption records, pair sampling, text pairs, demo data."""
