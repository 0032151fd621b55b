"""`python -m preempt protect ...` / `python -m preempt verify ...`: the `preempt` console script."""

import sys

from preempt.cli import main

sys.exit(main())
