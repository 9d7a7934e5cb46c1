"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class SlmtuneError(Exception):
    """A problem the user can fix (bad input, missing file, unknown name); shown without a traceback."""
