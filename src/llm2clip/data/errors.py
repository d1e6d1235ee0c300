"""The error every data reader raises for a file it cannot use."""


class DataError(ValueError):
    """A bad data file; the message names the file (and the row/line and key)."""
