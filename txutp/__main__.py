"""``python -m txutp``: the ``utpcat`` command (see :mod:`txutp.cli`)."""

import sys

from .cli import main

sys.exit(main())
