"""The long schemathesis run: tests/service/test_fuzz.py (every stateless check of `--checks all`
but negative_data_rejection, on SQLite and on PostgreSQL) with many more examples per operation
than CI's 25, for about ten minutes on a quiet machine.

    python bench/schema_fuzz.py                 # 100 examples per operation and mode
    python bench/schema_fuzz.py --examples 60   # shorter

Prints each backend's closing line (requests, 5xx, statuses, what was refused beyond the schema)
and pytest's verdict: 0 failures is the target.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="examples per operation and generation mode")
    args = parser.parse_args(argv)
    env = {**os.environ, "CHAINRULE_FUZZ_EXAMPLES": str(args.examples)}
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                            "tests/service/test_fuzz.py"], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
