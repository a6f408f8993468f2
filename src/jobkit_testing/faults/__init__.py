"""Ground truth for the fault-injection suite (``tests/faults/``), read around jobkit.

Each part keeps its helpers in its own module until they are unified.
"""
