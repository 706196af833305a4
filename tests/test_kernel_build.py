"""The feature kernel's ahead-of-time build: the same bits as numba's JIT, found by key, numba never imported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import features as F
from engine import kernel_build as K
from engine.feature_kernels import _process as jit_process

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def built_dir(tmp_path_factory) -> Path:
    """A folder holding a current build: the installed one (`make venv` builds it), else one made here."""
    found = K.find_build(K.build_key())
    if found is not None:
        return found.parent
    out = tmp_path_factory.mktemp("kernels")
    try:
        K.build(out)
    except Exception as e:  # noqa: BLE001  no C compiler: the JIT path stays covered by the other tests
        pytest.skip(f"could not build the feature kernel here: {type(e).__name__}: {e}")
    return out


def features_with(process, y: np.ndarray, sizes) -> np.ndarray:
    ex = F.FeatureExtractor()
    ex._process = process
    out, i = [], 0
    for n in sizes:
        out.append(ex.push(y[i : i + n]))
        i += n
    out.append(ex.push(y[i:]))
    return np.concatenate(out)


def test_build_gives_numbas_bits_on_speech_in_any_chunking(built_dir, speech_16k):
    aot = K.load_built(built_dir / K.file_name(K.build_key()))
    y = speech_16k[: 4 * 16_000 + 77]
    rng = np.random.default_rng(3)
    sizes = [int(n) for n in rng.integers(1, 1500, size=60)]
    want = features_with(jit_process, y, [len(y)])
    assert want.shape == (len(y) // 160, F.N_FEATURES)
    np.testing.assert_array_equal(features_with(aot, y, [len(y)]), want)
    np.testing.assert_array_equal(features_with(aot, y, sizes), want)
    bad = y[:800].copy()
    bad[5] = np.nan
    ex = F.FeatureExtractor()
    ex._process = aot
    with pytest.raises(ValueError, match="finite"):
        ex.push(bad)


def test_a_new_process_with_the_build_never_imports_numba(built_dir, speech_wav):
    code = (
        "import sys, soundfile as sf\n"
        "from engine import features as F\n"
        f"y, sr = sf.read({str(speech_wav)!r}, dtype='float32')\n"
        "out = F.FeatureExtractor().push(y[:16000])\n"
        "print(F.kernel()[1], 'numba' in sys.modules, out.shape[0])\n"
    )
    env = dict(os.environ, **{K.KERNEL_DIR_ENV: str(built_dir), K.MODE_ENV: "auto"})
    res = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["aot", "False", "100"]


def test_modes_and_a_missing_build(tmp_path, monkeypatch):
    monkeypatch.setenv(K.KERNEL_DIR_ENV, str(tmp_path))  # an empty folder: no build here
    monkeypatch.setenv(K.MODE_ENV, "aot")
    with pytest.raises(FileNotFoundError, match="kfusion kernels"):
        K.load()
    monkeypatch.setenv(K.MODE_ENV, "auto")
    assert K.load() == (jit_process, "jit")  # falls back to numba
    monkeypatch.setenv(K.MODE_ENV, "fast")
    with pytest.raises(ValueError, match="auto, jit, aot.*'fast'"):
        K.load()


def test_the_key_follows_the_kernel_sources(tmp_path, monkeypatch):
    for name in K.SOURCES:
        shutil.copy(K.ENGINE_DIR / name, tmp_path / name)
    monkeypatch.setattr(K, "ENGINE_DIR", tmp_path)
    same = K.build_key()
    with open(tmp_path / "feature_kernels.py", "a") as f:
        f.write("\n# an edit\n")
    assert K.build_key() != same
    monkeypatch.setattr(K, "ENGINE_DIR", REPO / "engine")
    assert K.build_key() == same


def test_an_install_the_user_cannot_write_to_builds_into_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(K.KERNEL_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    site = tmp_path / "site" / "engine"
    site.mkdir(parents=True)
    monkeypatch.setattr(K, "ENGINE_DIR", site)
    user = tmp_path / "cache" / "kfusion" / "kernels"
    assert K.kernel_dirs() == [site / "__pycache__", user]
    assert K.kernel_dir() == site / "__pycache__"  # writable: beside the sources, as numba's cache
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(site)) else real_access(p, mode))
    assert K.kernel_dir() == user  # read-only install: the user's cache (not made yet; its parent decides)
    name = K.file_name("0123abcd")
    assert K.find_build("0123abcd") is None
    user.mkdir(parents=True)
    (user / name).write_bytes(b"")
    assert K.find_build("0123abcd") == user / name
