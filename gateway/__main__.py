"""`python -m gateway serve ...` is `embedding-gateway serve ...`."""

import sys

from gateway.cli import main

sys.exit(main())
