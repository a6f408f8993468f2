"""``python -m jobkit`` is the ``jobkit`` command."""

from jobkit.cli.app import main

main()
