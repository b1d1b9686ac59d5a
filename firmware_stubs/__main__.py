"""``python -m firmware_stubs …`` is ``cumulus-stub …`` (handy in tests and without install)."""

from firmware_stubs.cli import main

raise SystemExit(main())
