"""``python -m labgate``: the same as the ``labgate`` command."""

from labgate.cli import main

main()
