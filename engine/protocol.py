"""Protocol v1 between kfusion clients and the server: JSON control messages, binary audio and frames.

Pure functions only (no sockets), so every parser can be fuzzed. docs/protocol.md is the reference.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

PROTOCOL_VERSION = 1
N_POINTS = 68
SUPPORTED_FPS = (25, 30, 60)
MIN_SAMPLE_RATE_HZ = 8_000
MAX_SAMPLE_RATE_HZ = 48_000
MAX_CHANNELS = 8
FORMATS = {"pcm16": np.dtype("<i2"), "f32": np.dtype("<f4")}
OUTPUTS = ("binary", "json")
IDENTITY_RANGE_PX = (-256.0, 512.0)  # canonical 256 px frame, with generous margins
MAX_REASON_BYTES = 120  # a close frame's reason must fit in 123 bytes

# websocket close codes (RFC 6455 section 7.4.1) used by the server
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003  # binary before start, unknown message type, unsupported version
CLOSE_INVALID = 1007  # bad JSON, bad field values, odd byte counts, NaN/inf audio
CLOSE_POLICY = 1008  # wrong token, origin not allowed
CLOSE_TOO_BIG = 1009  # message larger than max_size
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013  # server full

# Binary frame: 40-byte little-endian header followed by 68 x 2 float32 (x, y interleaved) and
# optionally n_controls float32. See docs/protocol.md for the byte table.
FRAME_MAGIC = b"KFLM"
FRAME_HEADER = struct.Struct("<4sBBHIIddd")
FRAME_HEADER_BYTES = FRAME_HEADER.size  # 40
FLAG_CONTROLS = 0x01


class ProtocolError(ValueError):
    """A message that breaks the protocol; `code` is the websocket close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def close_reason(self) -> str:
        """The reason shortened to fit a close frame (UTF-8 bytes, <= MAX_REASON_BYTES)."""
        raw = self.reason.encode("utf-8")[:MAX_REASON_BYTES]
        return raw.decode("utf-8", errors="ignore")


# --- messages -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    """Client -> server: begin streaming its own audio."""

    sample_rate: int = 16_000
    format: str = "pcm16"
    channels: int = 1
    fps: int = 30
    output: str = "binary"
    identity: tuple[tuple[float, float], ...] | None = None  # 68 (x, y) in the canonical frame
    emotion: str | None = None  # one of the model's emotions (ready.model.emotions); None = from audio
    controls: bool = False  # add ARKit-named controls to every frame
    smoothing: bool | None = None  # One Euro filter; None = the server's default
    token: str | None = None
    version: int = PROTOCOL_VERSION
    type: str = field(default="start", init=False)


@dataclass(frozen=True)
class Subscribe:
    """Client -> server: receive the frames of the server's microphone (`kfusion serve --mic`)."""

    output: str = "binary"
    token: str | None = None
    version: int = PROTOCOL_VERSION
    type: str = field(default="subscribe", init=False)


@dataclass(frozen=True)
class End:
    """Either way: client: no more audio (server flushes the last frames, sends end, closes 1000);
    server: the stream is over, with counts."""

    frames: int | None = None  # server only: frames produced
    dropped: int | None = None  # server only: frames dropped for a slow consumer
    version: int = PROTOCOL_VERSION
    type: str = field(default="end", init=False)


@dataclass(frozen=True)
class Ready:
    """Server -> client: the stream is set up; model facts the client needs."""

    fps: int
    model_fps: float
    lookahead_ms: float
    latency_ms: float  # lookahead plus interpolation delay for fps != model_fps
    model: dict  # {"version", "config_hash", "layout", "frame", "emotions"}
    controls: tuple[str, ...] = ()  # names of the control values carried by each frame
    output: str = "binary"
    source: str = "client"  # client | mic
    frame_header_bytes: int = FRAME_HEADER_BYTES
    version: int = PROTOCOL_VERSION
    type: str = field(default="ready", init=False)


@dataclass(frozen=True)
class Error:
    """Server -> client, sent just before a close with the same reason."""

    reason: str
    code: int = CLOSE_INVALID
    version: int = PROTOCOL_VERSION
    type: str = field(default="error", init=False)


@dataclass(frozen=True)
class FrameMessage:
    """One landmark frame (binary or JSON on the wire). Times are server wall clock, Unix seconds."""

    index: int  # frame i shows audio time i / fps
    audio_time_s: float
    chunk: int  # sequence number (0-based) of the audio message whose arrival completed this frame
    recv_time_s: float  # when that audio message arrived at the server
    send_time_s: float  # when the server handed this frame to the socket
    landmarks: np.ndarray  # (68, 2) float32, canonical 256 px frame
    controls: np.ndarray | None = None  # (n_controls,) float32, names in ready.controls


Message = Start | Subscribe | End | Ready | Error


# --- JSON helpers ---------------------------------------------------------------------------------
def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str | bytes) -> dict:
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nesting too deep
        raise ProtocolError(CLOSE_INVALID, f"bad JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(CLOSE_INVALID, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _get(obj: dict, key: str, kind: type | tuple, default=None, required: bool = False):
    if key not in obj or obj[key] is None:
        if required:
            raise ProtocolError(CLOSE_INVALID, f"'{obj.get('type')}' needs field '{key}'")
        return default
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python: refuse it where a number is expected, and vice versa
    if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise ProtocolError(CLOSE_INVALID, f"field '{key}' must be {names}, got {value!r:.40}")
    return value


def _choice(obj: dict, key: str, options: tuple, default):
    value = _get(obj, key, (str, int), default)
    if value not in options:
        raise ProtocolError(CLOSE_INVALID, f"field '{key}' must be one of {list(options)}, got {value!r:.40}")
    return value


def _check_version(obj: dict) -> int:
    version = _get(obj, "version", int, required=True)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(CLOSE_UNSUPPORTED, f"protocol version {PROTOCOL_VERSION} expected, got {version}")
    return version


def parse_identity(value) -> tuple[tuple[float, float], ...]:
    """68 [x, y] pairs of finite numbers in the canonical frame -> tuple of float pairs."""
    if not isinstance(value, list) or len(value) != N_POINTS:
        raise ProtocolError(CLOSE_INVALID, f"identity must be a list of {N_POINTS} [x, y] pairs")
    lo, hi = IDENTITY_RANGE_PX
    out = []
    for p in value:
        if (not isinstance(p, list) or len(p) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)):
            raise ProtocolError(CLOSE_INVALID, f"identity must be a list of {N_POINTS} [x, y] pairs")
        try:
            x, y = float(p[0]), float(p[1])
        except OverflowError:  # an integer too large for a float
            x = y = math.inf
        if not (math.isfinite(x) and math.isfinite(y) and lo <= x <= hi and lo <= y <= hi):
            raise ProtocolError(CLOSE_INVALID, f"identity coordinates must be finite and in [{lo}, {hi}] px")
        out.append((x, y))
    return tuple(out)


def _parse_start(obj: dict) -> Start:
    rate = _get(obj, "sample_rate", int, required=True)
    if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise ProtocolError(
            CLOSE_INVALID, f"sample_rate must be in [{MIN_SAMPLE_RATE_HZ}, {MAX_SAMPLE_RATE_HZ}] Hz, got {rate}")
    channels = _get(obj, "channels", int, 1)
    if not 1 <= channels <= MAX_CHANNELS:
        raise ProtocolError(CLOSE_INVALID, f"channels must be in [1, {MAX_CHANNELS}], got {channels}")
    identity = obj.get("identity")
    return Start(
        sample_rate=rate,
        format=_choice(obj, "format", tuple(FORMATS), "pcm16"),
        channels=channels,
        fps=_choice(obj, "fps", SUPPORTED_FPS, 30),
        output=_choice(obj, "output", OUTPUTS, "binary"),
        identity=None if identity is None else parse_identity(identity),
        emotion=_get(obj, "emotion", str),
        controls=_get(obj, "controls", bool, False),
        smoothing=_get(obj, "smoothing", bool),
        token=_get(obj, "token", str),
    )


def parse_client_message(text: str | bytes) -> Start | Subscribe | End:
    """A text message from a client -> Start | Subscribe | End, or ProtocolError with its close code."""
    obj = _loads(text)
    kind = obj.get("type")
    if kind not in ("start", "subscribe", "end"):
        raise ProtocolError(CLOSE_UNSUPPORTED, f"unknown message type {kind!r:.40}; expected start, subscribe or end")
    _check_version(obj)
    if kind == "start":
        return _parse_start(obj)
    if kind == "subscribe":
        return Subscribe(output=_choice(obj, "output", OUTPUTS, "binary"), token=_get(obj, "token", str))
    return End()


def parse_server_message(text: str | bytes) -> Ready | Error | End | FrameMessage:
    """A text message from the server -> Ready | Error | End | FrameMessage (JSON output)."""
    obj = _loads(text)
    kind = obj.get("type")
    _check_version(obj)
    try:
        if kind == "ready":
            return Ready(fps=int(obj["fps"]), model_fps=float(obj["model_fps"]),
                         lookahead_ms=float(obj["lookahead_ms"]), latency_ms=float(obj["latency_ms"]),
                         model=dict(obj["model"]), controls=tuple(obj.get("controls", ())),
                         output=obj.get("output", "binary"), source=obj.get("source", "client"),
                         frame_header_bytes=int(obj.get("frame_header_bytes", FRAME_HEADER_BYTES)))
        if kind == "error":
            return Error(reason=str(obj["reason"]), code=int(obj.get("code", CLOSE_INVALID)))
        if kind == "end":
            return End(frames=obj.get("frames"), dropped=obj.get("dropped"))
        if kind == "frame":
            lm = np.asarray(obj["landmarks"], dtype=np.float32)
            if lm.shape != (N_POINTS, 2):
                raise ValueError(f"landmarks must be {N_POINTS}x2, got {lm.shape}")
            ctl = obj.get("controls")
            return FrameMessage(index=int(obj["index"]), audio_time_s=float(obj["time"]), chunk=int(obj["chunk"]),
                                recv_time_s=float(obj["recv"]), send_time_s=float(obj["sent"]), landmarks=lm,
                                controls=None if ctl is None else np.asarray(ctl, dtype=np.float32))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(CLOSE_INVALID, f"bad '{kind}' message: {exc}") from exc
    raise ProtocolError(CLOSE_UNSUPPORTED, f"unknown server message type {kind!r:.40}")


def encode_message(msg: Message) -> str:
    """Any control message -> its JSON text (fields left None are omitted)."""
    d = {"type": msg.type, "version": msg.version}
    for key, value in msg.__dict__.items():
        if key in d or value is None:
            continue
        if isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        d[key] = value
    return json.dumps(d, separators=(",", ":"), allow_nan=False)


# --- audio in ---------------------------------------------------------------------------------------
def decode_audio(data: bytes, fmt: str, channels: int) -> np.ndarray:
    """One binary audio message -> (n_samples, channels) array (int16 or float32), validated.

    ProtocolError 1007 if the byte count is not a whole number of sample frames or f32 audio
    holds NaN/inf or values beyond +-16.
    """
    dtype = FORMATS[fmt]
    frame_bytes = dtype.itemsize * channels
    if len(data) % frame_bytes:
        raise ProtocolError(CLOSE_INVALID, f"audio message of {len(data)} bytes is not a whole number of "
                            f"{frame_bytes}-byte sample frames ({fmt}, {channels} ch)")
    pcm = np.frombuffer(data, dtype=dtype).reshape(-1, channels)
    if fmt == "f32" and pcm.size and not (np.isfinite(pcm).all() and np.abs(pcm).max() <= 16.0):
        raise ProtocolError(CLOSE_INVALID, "f32 audio must be finite and within [-16, 16] (expected about [-1, 1])")
    return pcm


def encode_audio(pcm: np.ndarray, fmt: str) -> bytes:
    """(n,) or (n, channels) samples -> bytes of the given format (clients use this)."""
    if fmt == "pcm16":
        if pcm.dtype.kind == "f":
            pcm = np.clip(np.round(pcm * 32767.0), -32768, 32767)
        return pcm.astype("<i2").tobytes()
    return np.asarray(pcm, dtype="<f4").tobytes()


# --- frames out ---------------------------------------------------------------------------------------
def encode_frame_binary(f: FrameMessage) -> bytes:
    return pack_frame(f.index, f.audio_time_s, f.chunk, f.recv_time_s, f.send_time_s, f.landmarks, f.controls)


def pack_frame(index: int, audio_time_s: float, chunk: int, recv_time_s: float, send_time_s: float,
               landmarks: np.ndarray, controls: np.ndarray | None = None) -> bytes:
    """encode_frame_binary from the fields themselves: the server's per-frame path builds no FrameMessage."""
    if not (0 <= index < 2**32 and 0 <= chunk < 2**32):
        raise ValueError(f"frame index and chunk must fit uint32, got {index} and {chunk}")
    ctl = b"" if controls is None else np.asarray(controls, "<f4").tobytes()
    n_ctl = 0 if controls is None else len(controls)
    head = FRAME_HEADER.pack(FRAME_MAGIC, PROTOCOL_VERSION, FLAG_CONTROLS if n_ctl else 0, n_ctl, index,
                             chunk, audio_time_s, recv_time_s, send_time_s)
    return head + np.asarray(landmarks, "<f4").tobytes() + ctl


def decode_frame_header(data: bytes) -> tuple[int, int, int, float, float, float]:
    """Binary frame -> (flags, index, chunk, audio time s, recv time s, send time s), the landmarks left
    undecoded (the load clients need only the timings); ProtocolError 1007 if the header or length is wrong."""
    if len(data) < FRAME_HEADER_BYTES:
        raise ProtocolError(CLOSE_INVALID, f"frame of {len(data)} bytes is shorter than its "
                            f"{FRAME_HEADER_BYTES}-byte header")
    magic, version, flags, n_ctl, index, chunk, t, recv, sent = FRAME_HEADER.unpack_from(data)
    if magic != FRAME_MAGIC or version != PROTOCOL_VERSION:
        raise ProtocolError(CLOSE_INVALID, f"bad frame header: magic {magic!r} version {version}")
    expected = FRAME_HEADER_BYTES + 4 * (N_POINTS * 2 + n_ctl)
    if len(data) != expected:
        raise ProtocolError(CLOSE_INVALID, f"frame must be {expected} bytes, got {len(data)}")
    return flags, index, chunk, t, recv, sent


def decode_frame_binary(data: bytes) -> FrameMessage:
    """Binary frame -> FrameMessage; ProtocolError 1007 if the header or length is wrong."""
    flags, index, chunk, t, recv, sent = decode_frame_header(data)
    body = np.frombuffer(data, "<f4", offset=FRAME_HEADER_BYTES)
    lm = body[: N_POINTS * 2].reshape(N_POINTS, 2).astype(np.float32)
    ctl = body[N_POINTS * 2:].astype(np.float32) if flags & FLAG_CONTROLS else None
    return FrameMessage(index, t, chunk, recv, sent, lm, ctl)


def encode_frame_json(f: FrameMessage, control_names: tuple[str, ...] = ()) -> str:
    d = {"type": "frame", "version": PROTOCOL_VERSION, "index": f.index, "time": f.audio_time_s,
         "chunk": f.chunk, "recv": f.recv_time_s, "sent": f.send_time_s,
         "landmarks": np.asarray(f.landmarks, np.float32).astype(np.float64).tolist()}
    if f.controls is not None:
        d["controls"] = np.asarray(f.controls, np.float32).astype(np.float64).tolist()
        if control_names:
            d["control_names"] = list(control_names)
    return json.dumps(d, separators=(",", ":"), allow_nan=False)
