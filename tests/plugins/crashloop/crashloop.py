"""A plugin that fails at start-up every time, like one whose database is unreachable."""

import sys

print("connecting to the database at db:5432", flush=True)
print("error: could not connect to db:5432: connection refused", file=sys.stderr, flush=True)
sys.exit(3)
