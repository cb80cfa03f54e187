"""``python -m lesionlib ...``: the same as the ``lesionlib`` command."""

import sys

from .cli import main

sys.exit(main())
