"""Makes the plugin importable from its source tree when it is not installed (bkt's own test
run collects these tests too); an installed copy is used when there is one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("bkt_base_image") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
