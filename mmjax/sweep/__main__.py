"""`python -m mmjax.sweep`: the command line of mmjax/sweep/cli.py."""
import sys

from mmjax.sweep.cli import main

sys.exit(main())
