"""``python -m ropetool``: the same as the ``ropetool`` command."""

from ropetool.cli import main

main()
