"""`python -m oktasync` is the `oktasync` command."""

import sys

from oktasync.cli import main

sys.exit(main())
