"""The export's one exception, in a module of its own so that the package's modules need not import its `__init__`."""


class ExportError(ValueError):
    """A run that cannot be exported as asked; the message (one line) names the file or says what to do."""
