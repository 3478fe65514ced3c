"""Imported first by the scripts here: puts the repository root on ``sys.path`` so that they
import the project (``crypto``, ``schemas``, ``server``, ...) from this checkout."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
