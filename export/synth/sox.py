"""Run one sox effect chain over an array and get a set number of samples back (float32 all the way).

    y2 = sox_same_length(y, 16000, ["pitch", "300.0"])   # 3 semitones up, as many samples as y
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf


def sox_same_length(y: np.ndarray, sr: int, effect: list[str], n_out: int | None = None) -> np.ndarray:
    """y (N,) at sr through `sox ... EFFECT`, trimmed or zero-padded to n_out samples (default N).

    Deterministic: no dither (-D), so the same input always gives the same output."""
    with tempfile.TemporaryDirectory(prefix="kfusion-sox-") as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        sf.write(src, y, sr, subtype="FLOAT")
        subprocess.run(["sox", "-D", str(src), "-e", "floating-point", "-b", "32", str(dst), *effect], check=True,
                       capture_output=True)
        out, _ = sf.read(dst, dtype="float32")
    n = len(y) if n_out is None else n_out
    return out[:n] if len(out) >= n else np.pad(out, (0, n - len(out)))
