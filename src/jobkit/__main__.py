"""``python -m jobkit`` is the ``jobkit`` command (same exit codes)."""

import sys

from jobkit.cli.app import main

sys.exit(main())
