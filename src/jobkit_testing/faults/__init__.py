"""Ground truth for the fault-injection suite (``tests/faults/``), read
independently of jobkit's API: raw store rows, marker files, the process table."""
