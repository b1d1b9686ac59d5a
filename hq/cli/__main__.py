"""`python -m hq.cli …` is `cumulus-hq …`."""

import sys

from hq.cli.main import main

sys.exit(main())
