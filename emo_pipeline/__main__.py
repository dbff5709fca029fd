"""`python -m emo_pipeline ...`: the command line (emo_pipeline/cli/)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
