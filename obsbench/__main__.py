"""``python -m obsbench``: the same as the ``obsbench`` command."""

import sys

from obsbench.cli import main

sys.exit(main())
