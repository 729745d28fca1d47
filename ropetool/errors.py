"""The one exception type ropetool raises for bad input; the CLI turns it into a one-line error."""


class RopetoolError(Exception):
    """A problem with the user's input or request, explained in one line."""
