"""``python -m redteam`` runs the CLI."""

import sys

from redteam.cli import main

sys.exit(main())
