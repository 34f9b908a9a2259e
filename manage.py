#!/usr/bin/env python
"""Django's command-line utility for metasync (every daemon is a management command)."""

import sys

from django.core.management import execute_from_command_line

from metasync.bootstrap import configure_or_exit
from metasync.env import ConfigError


def main() -> None:
    configure_or_exit()
    try:
        execute_from_command_line(sys.argv)
    except ConfigError as exc:  # a daemon found a setting it needs missing or wrong
        sys.stderr.write(f"metasync: configuration error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
