"""``python -m equireg`` is the ``equireg`` command."""

import sys

from equireg.cli import main

sys.exit(main())
