"""`kfusion serve`: the command line of the websocket server, and the engine options it shares with `kfusion demo`.

Usage: kfusion serve [--port 8765] [--workers N] [--max-load F] [--mic] [--token T] ...   (docs/protocol.md)
"""

from __future__ import annotations

from engine import eventloop
from engine.config import DEFAULT_HOST, DEFAULT_PORT, EngineConfig
from engine.session import add_lip_seal_argument


def add_config_arguments(p) -> None:
    """Engine options shared by serve and demo."""
    p.add_argument("--model", dest="model_path", help="ONNX model (default: the one shipped in the package)")
    p.add_argument("--providers", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--fps", type=int, default=30, help="default frame rate for the mic stream (25, 30, 60)")
    p.add_argument("--smoothing", action="store_true", help="One Euro filter on the landmarks by default")
    p.add_argument("--controls", action="store_true", help="ARKit-named controls on the mic stream's frames")
    add_lip_seal_argument(p)
    p.add_argument("--batch-wait-ms", type=float, default=2.0, help="longest a due frame waits to be batched")
    p.add_argument("--event-loop", dest="event_loop", default="auto", choices=("auto", "uvloop", "asyncio"),
                   help="asyncio event loop (auto: uvloop when installed)")
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--max-streams", type=int, default=256, help="connections beyond this are closed with 1013")
    p.add_argument("--max-load", type=float, default=0.0,
                   help="refuse new streams with 1013 when this worker's event loop would pass this share of one "
                        "core (0..1, e.g. 0.85; 0 = off); see docs/scaling.md")
    p.add_argument("--outbox-frames", type=int, default=64, help="frames buffered per slow client")
    p.add_argument("--token", help="shared secret clients must send in start/subscribe")
    p.add_argument("--allow-origin", action="append", default=[], help="allowed browser Origin (repeat)")
    p.add_argument("--mic", action="store_true", help="broadcast the server's microphone to subscribers")
    p.add_argument("--mic-device", help="input device index or name (python -m engine.mic lists them)")


def config_from_args(args, **overrides) -> EngineConfig:
    kw = {"model_path": args.model_path, "providers": args.providers, "fps": args.fps, "smoothing": args.smoothing,
              "controls": args.controls, "lip_seal_pct": args.lip_seal_pct, "batch_wait_ms": args.batch_wait_ms,
              "event_loop": args.event_loop,
              "host": args.host, "port": args.port,
              "max_streams": args.max_streams, "max_load": args.max_load, "outbox_frames": args.outbox_frames, "token": args.token,
              "allowed_origins": tuple(args.allow_origin), "mic": args.mic, "mic_device": args.mic_device}
    kw.update(overrides)
    return EngineConfig(**kw)


def add_arguments(p) -> None:
    add_config_arguments(p)
    p.add_argument("--workers", type=int, default=1, help="server processes sharing the port (SO_REUSEPORT)")


def run(args) -> int:
    from engine.mic import MicError

    config = config_from_args(args, workers=args.workers)
    if config.workers > 1:
        from engine.workers import serve_workers

        return serve_workers(config)
    from engine.server import LandmarkServer

    server = LandmarkServer(config)
    try:
        eventloop.run(server.serve_until_signal(), config.event_loop)
    except MicError as exc:
        raise ValueError(f"--mic: {exc}") from exc
    return 0
