"""`DataError`, the error every data reader raises; defined in `llm2clip/errors.py` (every
layer raises it, images included) and importable from here as in 0.1."""
from ..errors import DataError

__all__ = ["DataError"]
