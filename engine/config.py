"""Constants of the audio-to-landmark path and the one frozen config carried from the CLI to the core."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field

from engine.eventloop import EVENT_LOOPS

# --- audio and feature timing -------------------------------------------------------------------
SAMPLE_RATE_HZ = 16_000
HOP_MS = 10
HOP_SAMPLES = SAMPLE_RATE_HZ * HOP_MS // 1000  # 160 samples per feature hop
if HOP_SAMPLES * 1000 != SAMPLE_RATE_HZ * HOP_MS:
    raise ValueError(f"HOP_MS={HOP_MS} must give a whole number of samples at {SAMPLE_RATE_HZ} Hz")
HOPS_PER_SECOND = 1000 // HOP_MS
MIN_INPUT_RATE_HZ = 8_000
MAX_INPUT_RATE_HZ = 48_000

# --- landmark frames ----------------------------------------------------------------------------
DEFAULT_FPS = 30
SUPPORTED_FPS = (25, 30, 60)
N_LANDMARKS = 68
LANDMARK_LAYOUT = "ibug68"
CANONICAL_SIZE_PX = 256  # landmarks live in a 256x256 aligned face crop, x right, y down
MAX_LIP_SEAL_PCT = 5.0  # lip seal dead zone limit, % of the eye distance (open vowels open to 8-15 %)


def lip_seal_pct_value(value, what: str = "lip_seal_pct", text: bool = False) -> float:
    """A lip seal setting as a float in [0, MAX_LIP_SEAL_PCT]; ValueError naming `what` otherwise. A number, or
    with text=True (model metadata, ModelSession's argument) the text of one. The one check behind EngineConfig, ModelSession, the
    model metadata and `kfusion export`."""
    try:
        if isinstance(value, str | bytes) and not text:
            raise TypeError(value)
        pct = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of percent in [0, {MAX_LIP_SEAL_PCT:g}], got {value!r}") from None
    if not 0.0 <= pct <= MAX_LIP_SEAL_PCT:
        raise ValueError(f"{what} must be in [0, {MAX_LIP_SEAL_PCT:g}] % of the eye distance, got {pct:g}")
    return pct

# --- protocol and server ------------------------------------------------------------------------
PROTOCOL_VERSION = 1
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765

log = logging.getLogger("kfusion")


@dataclass(frozen=True)
class EngineConfig:
    """Everything the runtime needs, validated once. Built by the CLI, read by every stage."""

    model_path: str | None = None  # None: the model shipped in engine/assets
    providers: str = "auto"  # auto | cpu | cuda
    fps: int = DEFAULT_FPS
    smoothing: bool = False  # One Euro filter on the output landmarks
    one_euro_min_cutoff_hz: float = 3.0
    one_euro_beta: float = 0.05
    controls: bool = False  # ARKit-named avatar controls on each frame
    lip_seal_pct: float | None = None  # lip seal dead zone, % of the eye distance; None: the model's own
    # batching
    batch_wait_ms: float = 2.0  # longest a due frame waits for others to join its batch
    max_batch: int = 256
    event_loop: str = "auto"  # one of EVENT_LOOPS: auto (uvloop when installed) | uvloop | asyncio
    # server
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    max_streams: int = 256
    max_load: float = 0.0  # share of one core past which new streams get 1013 (engine/admission.py); 0 = off
    max_message_bytes: int = 1 << 20
    max_queue: int = 32
    ping_interval_s: float = 20.0
    outbox_frames: int = 64  # frames buffered per slow consumer before the oldest are dropped
    token: str | None = None
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)
    # server-side microphone
    mic: bool = False
    mic_device: str | None = None
    mic_block_ms: int = 20

    def __post_init__(self) -> None:
        if self.fps not in SUPPORTED_FPS:
            raise ValueError(f"fps must be one of {SUPPORTED_FPS}, got {self.fps}")
        if self.providers not in ("auto", "cpu", "cuda"):
            raise ValueError(f"providers must be 'auto', 'cpu' or 'cuda', got {self.providers!r}")
        if not 0 <= self.batch_wait_ms <= 50:
            raise ValueError(f"batch_wait_ms must be in [0, 50] ms, got {self.batch_wait_ms}")
        if self.event_loop not in EVENT_LOOPS:
            raise ValueError(f"event_loop must be one of {EVENT_LOOPS}, got {self.event_loop!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {self.max_streams}")
        if not 0.0 <= self.max_load <= 1.0:
            raise ValueError(f"max_load must be a share of one core in [0, 1] (0 = off), got {self.max_load}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}")
        if self.outbox_frames < 1:
            raise ValueError(f"outbox_frames must be >= 1, got {self.outbox_frames}")
        if not 5 <= self.mic_block_ms <= 200:
            raise ValueError(f"mic_block_ms must be in [5, 200], got {self.mic_block_ms}")
        if self.lip_seal_pct is not None:
            lip_seal_pct_value(self.lip_seal_pct)
        if self.one_euro_min_cutoff_hz <= 0:
            raise ValueError(f"one_euro_min_cutoff_hz must be > 0, got {self.one_euro_min_cutoff_hz}")

    def log(self) -> None:
        """Log the whole config once at start-up (the token is masked)."""
        d = dataclasses.asdict(self)
        if d["token"]:
            d["token"] = "***"
        log.info("config %s", json.dumps(d, sort_keys=True))
