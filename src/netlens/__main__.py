"""``python -m netlens``: the ``netlens`` command."""

import sys

from netlens.cli import main

sys.exit(main())
