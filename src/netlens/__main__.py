"""``python -m netlens``: the ``netlens`` command."""

import sys

from netlens.app.cli import main

sys.exit(main())
