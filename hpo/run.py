"""``python -m hpo.run STUDY.yaml [options]`` and the ``fewshot-hpo`` console script (see :mod:`hpo.cli`)."""
import sys

from hpo.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
