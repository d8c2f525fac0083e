"""`python -m pipeline` is the `tailpipe` command."""

import sys

from pipeline.cli import main

sys.exit(main())
