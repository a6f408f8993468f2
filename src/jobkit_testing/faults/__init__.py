"""Ground truth for the fault-injection suite (``tests/faults``), read without jobkit's API."""
