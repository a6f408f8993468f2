"""``python -m jobkit.cli``: the same as the ``jobkit`` console script."""

from __future__ import annotations

import sys

from jobkit.cli.app import main

sys.exit(main())
