"""Test support for jobkit's own tests and benchmarks: not shipped in the wheel.

Imported normally by ``tests/`` and ``benchmarks/`` (the editable install
puts ``src/`` on ``sys.path``): no ``sys.path`` edits, and only public names.
It needs the dev extra (``pip install -e '.[dev]'``: kmock, kubernetes, pytest).

    child_signals   children that tests signal, with SIGINT/SIGTERM at their defaults
    k8s_emulator    a Kubernetes API over real HTTP and a Job controller running pods locally
"""
