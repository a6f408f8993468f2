"""The ``jobkit`` command line (see :mod:`jobkit.cli.app`).

Empty on purpose: ``import jobkit.cli`` must not pull in typer, rich or the
configuration machinery before a command decides it needs them.
"""
