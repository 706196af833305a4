"""Where kfusion keeps what it makes and can make again: feature caches, corpora, checkpoints, eval videos,
benchmark scratch. Never the repository: eval videos carry the pack's faces and voices.

KFUSION_CACHE when set; else /work/cache where it exists and can be written (this project's machines);
else ~/.cache/kfusion (XDG_CACHE_HOME respected).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "KFUSION_CACHE"
PROJECT_CACHE = Path("/work/cache")


def cache_root(project_cache: Path = PROJECT_CACHE) -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if project_cache.is_dir() and os.access(project_cache, os.W_OK):
        return project_cache
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kfusion"


def cache_dir(*parts: str) -> Path:
    """A path under the cache root (not created here)."""
    return cache_root().joinpath(*parts)
