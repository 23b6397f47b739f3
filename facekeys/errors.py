"""User-facing errors: one line, naming the file and the problem, never a traceback."""


class FacekeysError(Exception):
    """An error caused by input or configuration, reported to the user as one line."""


class DataUnusableError(FacekeysError):
    """A data set (or one of its files) cannot be used by the pipeline."""
