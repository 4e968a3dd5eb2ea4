"""Where the dashboard's tests find the browser, and how they start the dashboard as a process."""

from __future__ import annotations

import sys

CHROMIUM = "/usr/bin/chromium"  # Debian's chromium (.ci/browser installs it)
DASHBOARD = [sys.executable, "-m", "arbiter"]  # then --root ROOT dashboard ...
