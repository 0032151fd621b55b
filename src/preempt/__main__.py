"""`python -m preempt protect ...` / `python -m preempt verify ...`: the `preempt` console script."""

import sys

from preempt.commands.preempt import main

sys.exit(main())
