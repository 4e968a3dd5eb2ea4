"""Run the Arbiter broker: ``python broker.py [--root DIR] [--frontend EP] [--events-pub EP] [--events-sub EP]``.

The same daemon as ``arbiter broker`` (the package must be installed: ``pip install .`` or
``pip install -e .``); this file lets the broker be started by path, e.g. by a supervisor.
"""

import sys
from pathlib import Path

# Python puts this file's directory first on the import path. In a checkout that directory holds
# the source tree, where arbiter.dsl lives in ./dsl and only exists once installed: import the
# installed package instead of the tree.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from arbiter.cli.broker_commands import broker_main  # noqa: E402

if __name__ == "__main__":
    broker_main()
