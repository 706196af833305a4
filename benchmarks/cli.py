"""`kfusion bench NAME [--json PATH]`: run one benchmark, or `all` of those written so far.

Usage: kfusion bench features --json /work/cache/bench/features.json

Contract for benchmark modules (add one per benchmark, named benchmarks/bench_<name>.py, and list the
name in BENCHMARKS below):
- `add_arguments(parser)`: add the benchmark's own options to its argparse parser. `--json PATH` is
  added here for every benchmark (a module that adds its own `--json` replaces it).
- `run(args) -> int`: run, print the machine, the settings, median/p99/max and the ratio against a
  peer measured in the same run; write the results to `args.json` when it is set; return 0 on success.
  Keep heavy imports (torch, onnxruntime, librosa) inside `run`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> what it measures (module benchmarks.bench_<name>)
BENCHMARKS: dict[str, str] = {
    "features": "numba feature front end per hop vs librosa (rolling buffer, whole second)",
    "latency": "end-to-end websocket latency, audio in to landmark frame out",
    "capacity": "how many live streams one process serves in real time",
    "model": "ONNX Runtime model per frame and per batch vs torch eager",
    "quality": "landmark error on the pack's test split vs baselines",
    "articulation": "lips close on p/b/m and open on open vowels, unseen voices and sentences",
    "coldstart": "process start to first landmark frame",
    "scaleout": "live streams within target with `serve --workers 2` vs one process",
    "admission": "streams that keep arriving, `serve --max-load` vs no limit: who is admitted and on time",
    "providers": "ONNX Runtime's CUDA provider vs its CPU provider: parity and cost per call (needs a GPU)",
}


def _load(name: str):
    """The module of a registered benchmark, or None when it is not written yet."""
    module_name = f"benchmarks.bench_{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True, metavar="NAME")
    for name, help_text in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, conflict_handler="resolve")
        p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
        module = _load(name)
        if module is None:
            p.set_defaults(_bench_missing=True)
            continue
        module.add_arguments(p)
    p = sub.add_parser("all", help="run every benchmark that is available, with default settings")
    p.add_argument("--json", metavar="DIR", help="write DIR/<name>.json for each benchmark")


def _run_one(name: str, args: argparse.Namespace) -> int:
    module = _load(name)
    if module is None:
        print(
            f"kfusion bench {name}: not available yet (benchmarks/bench_{name}.py is not written)",
            file=sys.stderr,
        )
        return 2
    return int(module.run(args) or 0)


def run(args: argparse.Namespace) -> int:
    if args.bench != "all":
        return _run_one(args.bench, args)
    from pathlib import Path

    failed = []
    for name, help_text in BENCHMARKS.items():
        module = _load(name)
        if module is None:
            print(f"== {name}: not available yet, skipped")
            continue
        parser = argparse.ArgumentParser(prog=f"kfusion bench {name}", conflict_handler="resolve")
        parser.add_argument("--json")
        module.add_arguments(parser)
        sub_args = parser.parse_args([])
        if args.json:
            Path(args.json).mkdir(parents=True, exist_ok=True)
            sub_args.json = str(Path(args.json) / f"{name}.json")
        print(f"== {name}: {help_text}", flush=True)
        if int(module.run(sub_args) or 0) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
