"""The `kfusion` console command: one entry point, one subcommand per job.

Usage: kfusion {serve,stream,demo,infer,prepare,synth,train,eval,export,bench} ...

Each subcommand lives in its own module, which exposes `add_arguments(parser)` and `run(args) -> int`.
Modules keep heavy imports (torch, onnxruntime) inside `run`, so `kfusion --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("engine.serve_cli", "run the websocket landmark server"),
    "stream": ("clients.stream_client", "stream a microphone or a file to a server and show live stats"),
    "demo": ("engine.demo", "start the server on the default model and stream speech to it"),
    "kernels": ("engine.kernel_build", "build the feature kernel ahead of time, so new processes start fast"),
    "infer": ("engine.infer", "write landmark tracks (npz) for audio files"),
    "prepare": ("export.prepare", "turn talking-head videos into training data (wav + lm68.npy)"),
    "synth": ("export.synth.cli", "generate a phoneme-timed synthetic speech+landmark corpus"),
    "train": ("export.train", "train the KFusion model"),
    "eval": ("export.evaluate", "evaluate models and baselines on a split of the pack"),
    "export": ("export.onnx_export", "export a checkpoint to ONNX with its metadata contract"),
    "mix": ("export.mix", "mix two fine-tunes of one model in weight space (a checkpoint to export)"),
    "bench": ("benchmarks.cli", "run a benchmark (features, latency, capacity, model, ...)"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kfusion", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # import only the chosen subcommand's module, so `kfusion serve` never pays for torch (start-up time)
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    wanted = words[0] if words and words[0] in SUBCOMMANDS else None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if wanted is not None and name != wanted:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            p.set_defaults(_unavailable=f"`kfusion {name}` is not available in this build ({exc})")
            continue
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "_unavailable", None):
        print(args._unavailable, file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError) as exc:  # user-facing errors: one clear line, no traceback
        if args.verbose:
            raise
        print(f"kfusion {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
