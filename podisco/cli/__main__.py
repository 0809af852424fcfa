"""`python -m podisco.cli`: the same as the `podisco` command."""

import sys

from podisco.cli.main import main

sys.exit(main())
