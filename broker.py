"""Run the Arbiter broker: ``python broker.py [--root DIR] [--frontend EP] [--events-pub EP] [--events-sub EP]``.

The same daemon as ``arbiter broker``; this file exists so the broker can be started from a
checkout without installing the console script.
"""

from arbiter.cli.broker_commands import broker_main

if __name__ == "__main__":
    broker_main()
