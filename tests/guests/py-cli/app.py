"""A wasi:cli command built by componentize-py: prints its arguments and environment, then
exits with CODE when its arguments end in `exit CODE`.

CPython's own `sys.exit(CODE)` reaches the host only as success or failure (wasi:cli/exit's
`exit`), so an exact code goes through `exit-with-code` (WASI 0.2.12) directly.
"""

import os
import sys

from wit_world import exports
from wit_world.imports import exit as wasi_exit


class Run(exports.Run):
    def run(self) -> None:
        args = sys.argv[1:]
        print(f"args: {args}")
        for key, value in sorted(os.environ.items()):
            print(f"env: {key}={value}")
        print(f"python {sys.version_info.major}.{sys.version_info.minor}")
        if len(args) >= 2 and args[-2] == "exit":
            sys.stdout.flush()
            wasi_exit.exit_with_code(int(args[-1]))
