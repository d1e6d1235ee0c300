"""The error every reader of our inputs raises for a file it cannot use (data files,
images, benchmarks, stores). At the bottom of the package so every layer can raise it."""


class DataError(ValueError):
    """A bad data file; the message names the file (and the row/line and key)."""
