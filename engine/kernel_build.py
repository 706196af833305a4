"""Ahead-of-time build of the feature kernel (numba.pycc), so a new process reaches its first hop without numba.

Usage: kfusion kernels [--check]      (`make venv` runs it once)
Loading numba's own cache costs about 1.3 s per process here (numba's import, then its typing and target
registries, which import scipy.linalg); the built module imports in milliseconds and gives the same bits.
It is keyed by the kernel sources, the Python ABI and this CPU, so an edited kernel or another machine
falls back to numba (cache=True) until the next build. KFUSION_KERNELS=jit forces numba, =aot demands the build.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import os
import sys
import sysconfig
import time
import warnings
from pathlib import Path

log = logging.getLogger("kfusion.kernels")
ENGINE_DIR = Path(__file__).resolve().parent
SOURCES = ("features.py", "feature_kernels.py", "config.py", "kernel_build.py")  # what the build depends on
KERNEL_DIR_ENV = "KFUSION_KERNEL_DIR"  # where builds live (default: engine/__pycache__, beside numba's cache)
MODE_ENV = "KFUSION_KERNELS"  # auto | jit | aot
MODES = ("auto", "jit", "aot")
# pycc needs each argument's type: the extractor's buffers, the new samples, n_hops, first_hop, the output
SIGNATURE = "b1(f8[::1], f4[::1], f8[::1], f8[::1], f4[::1], i8, i8, f4[:, ::1])"


def _cpu_id() -> str:
    """The CPU model and flags: the build targets this host's instruction set."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return "".join(lines) or os.uname().machine


def build_key() -> str:
    h = hashlib.sha1()
    for name in SOURCES:
        h.update((ENGINE_DIR / name).read_bytes())
    h.update(sys.version.encode())
    h.update(_cpu_id().encode())
    return h.hexdigest()[:16]


def kernel_dirs() -> list[Path]:
    """Where builds may live, in order: KFUSION_KERNEL_DIR alone when it is set; else beside the sources
    (as numba's own cache), then the user's cache, for an install this user cannot write to."""
    if os.environ.get(KERNEL_DIR_ENV):
        return [Path(os.environ[KERNEL_DIR_ENV])]
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kfusion" / "kernels"
    return [ENGINE_DIR / "__pycache__", user_cache]


def _writable(folder: Path) -> bool:
    while not folder.exists():  # a folder not made yet: ask its nearest existing parent
        folder = folder.parent
    return os.access(folder, os.W_OK)


def kernel_dir() -> Path:
    """Where a new build goes: the first of kernel_dirs() this user can write to."""
    dirs = kernel_dirs()
    return next((d for d in dirs if _writable(d)), dirs[-1])


def module_name(key: str) -> str:
    return f"_kf_features_{key}"


def file_name(key: str) -> str:
    """The build's file name: the module name and this Python's extension suffix."""
    return module_name(key) + sysconfig.get_config_var("EXT_SUFFIX")


def module_path(key: str) -> Path:
    """Where the build for `key` goes (kernel_dir())."""
    return kernel_dir() / file_name(key)


def find_build(key: str) -> Path | None:
    """The build for `key` in the first of kernel_dirs() that has it, else None."""
    name = file_name(key)
    return next((d / name for d in kernel_dirs() if (d / name).is_file()), None)


def mode() -> str:
    m = os.environ.get(MODE_ENV, "auto") or "auto"
    if m not in MODES:
        raise ValueError(f"{MODE_ENV} must be one of {', '.join(MODES)}, got {m!r}")
    return m


def load_built(path: Path):
    """The process function of a built module (its file name carries the module name)."""
    spec = importlib.util.spec_from_file_location(path.name.split(".")[0], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.process


def load():
    """(process function, 'aot' | 'jit'): the built module when it matches, else numba's kernel."""
    m = mode()
    if m != "jit":
        key = build_key()
        path = find_build(key)
        if path is not None:
            return load_built(path), "aot"
        where = " or ".join(str(d) for d in kernel_dirs())
        if m == "aot":
            raise FileNotFoundError(f"{MODE_ENV}=aot but no feature-kernel build {module_name(key)} in {where}: "
                                    "run `kfusion kernels`")
        log.info("no feature-kernel build for these sources in %s; using numba (run `kfusion kernels`)", where)
    from engine.feature_kernels import _process

    return _process, "jit"


def build(out_dir: Path | None = None) -> Path:
    """Compile the kernel for this host into out_dir (default kernel_dir()); returns the module's path."""
    with warnings.catch_warnings():  # numba.pycc is marked for deprecation; it is still what builds a module
        warnings.simplefilter("ignore")
        from numba.pycc import CC

    from engine.feature_kernels import _process

    key = build_key()
    out_dir = Path(out_dir) if out_dir else kernel_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # distutils logs every gcc command line to the root logger at INFO
    try:
        cc = CC(module_name(key))  # probes the C compiler
        cc.output_dir = str(out_dir)
        cc.target_cpu = "host"  # the same instructions numba's JIT picks here (FMA included): the same bits
        cc.verbose = False
        cc.export("process", SIGNATURE)(_process.py_func)
        cc.compile()
    finally:
        root.setLevel(level)
    for old in out_dir.glob("_kf_features_*"):  # builds of older sources or another CPU
        if old.name != file_name(key):
            old.unlink(missing_ok=True)
    return out_dir / file_name(key)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="only say whether a current build exists (exit 1 if not)")


def run(args: argparse.Namespace) -> int:
    key = build_key()
    found = find_build(key)
    if args.check:
        print(f"built: {found}" if found else f"missing: {module_name(key)} in {' or '.join(map(str, kernel_dirs()))}")
        return 0 if found else 1
    if found:
        print(f"feature kernel already built for these sources and this CPU: {found}")
        return 0
    print("building the feature kernel ahead of time (numba.pycc, about 10 s) ...", flush=True)
    t0 = time.perf_counter()
    try:
        built = build()
    except Exception as e:  # noqa: BLE001  pycc fails in many ways (no C compiler, no headers); report any
        print(f"could not build the feature kernel ({type(e).__name__}: {e}); numba's JIT will be used "
              f"(each new process then spends about a second loading it). {KERNEL_DIR_ENV} picks the folder.",
              file=sys.stderr)
        return 1
    print(f"built {built} in {time.perf_counter() - t0:.1f} s")
    return 0
