"""`python -m loopchat ...` is the `loopchat` command (vLLM needs a __main__ guard)."""

import sys

from loopchat.cli import main

if __name__ == "__main__":
    sys.exit(main())
