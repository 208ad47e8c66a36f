"""``make demo``: the whole pipeline on this machine, one task, end to end."""

from __future__ import annotations

import sys


def main() -> int:
    print("sdeks demo: local mode (`sdeks local up`) is not built yet; see issue 7.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
