"""The `strato` root command: version, exit codes, no tracebacks for everyday mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import strato

STRATO = str(Path(sys.executable).with_name("strato"))


def test_version_prints_the_package_version_and_exits_0():
    done = subprocess.run([STRATO, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"strato {strato.__version__}"
