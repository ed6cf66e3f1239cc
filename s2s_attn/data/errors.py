"""The error every data problem is reported with."""


class DataError(Exception):
    """A problem with the user's data or data config, explained in one or two sentences.

    The message says what is wrong, which file, and what to do about it; the CLI prints it without a
    traceback.
    """
