"""Shared test setup: point the data loader at the repository's neighbouring shared/datasets when
TINYGEN_DATA is not set, and never download during tests."""
import os
from pathlib import Path

_shared = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
if "TINYGEN_DATA" not in os.environ and _shared.is_dir():
    os.environ["TINYGEN_DATA"] = str(_shared)
os.environ.setdefault("TINYGEN_OFFLINE", "1")
