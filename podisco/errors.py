"""The base of every error that is the user's to fix (a bad name, row, path or value); the CLI prints these
as one clear line instead of a traceback. Imports nothing, so every layer can use it."""


class PodiscoError(Exception):
    """An error with a message that says what was wrong and where."""
