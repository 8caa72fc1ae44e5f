"""`python -m advlayers ...`: the `advlayers` command (`advlayers.tools.cli`)."""

import sys

from advlayers.tools.cli import main

sys.exit(main())
