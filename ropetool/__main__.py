"""``python -m ropetool``: the same as the ``ropetool`` command."""

from .cli import main

main()
