"""`python -m oktasync_emulators` is the `oktasync-emulate` command."""

import sys

from oktasync_emulators.cli import main

sys.exit(main())
