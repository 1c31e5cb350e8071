"""``python -m hpo`` is ``python -m hpo.run``."""
import sys

from hpo.cli import main

sys.exit(main())
