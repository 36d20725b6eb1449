"""``python -m recsys.deploy``: :mod:`recsys.deploy.cli`."""

import sys

from recsys.deploy.cli import main

sys.exit(main())
