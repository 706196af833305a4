"""Hostile clients against a real server: each gets its close code and reason, the server stays up, and a
well-behaved real-speech stream running beside them loses no frame. Also fuzzes engine/protocol.py's parsers."""

from __future__ import annotations

import asyncio
import json
import resource
import time
import urllib.request

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_server import CHUNK_MS, ServerThread, _free_port, _offline, _refused, _stream
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from engine import protocol as P
from engine import timing
from engine.config import EngineConfig

MAX_MESSAGE_BYTES = 64 * 1024
GOOD_SPEECH_S = 3.0  # the well-behaved stream, paced in real time
N_FLOOD = 1000  # connections opened at once
FLOOD_MAX_STREAMS = 200
FLOOD_TIMEOUT_S = 30.0


def _start(**kw) -> str:
    return P.encode_message(P.Start(**{"sample_rate": 16000, **kw}))


def _raw_start(**fields) -> str:
    return json.dumps({"type": "start", "version": 1, **fields})


_F32 = {"format": "f32"}
# (messages, expected close code, words the reason must contain); each is sent on a fresh connection
HOSTILE = [
    # before start
    ([b"\x00\x01" * 10], P.CLOSE_UNSUPPORTED, "binary audio before start"),
    (["{oops"], P.CLOSE_INVALID, "bad JSON"),
    (["[1, 2]"], P.CLOSE_INVALID, "expected a JSON object"),
    (['{"type": "start", "version": 1, "sample_rate": NaN}'], P.CLOSE_INVALID, "bad JSON"),
    (["[" * 50_000], P.CLOSE_INVALID, "bad JSON"),  # nesting deeper than Python's recursion limit
    (['{"type": "dance", "version": 1}'], P.CLOSE_UNSUPPORTED, "unknown message type"),
    (['{"type": ["start"], "version": 1}'], P.CLOSE_UNSUPPORTED, "unknown message type"),
    (['{"type": "start", "version": 2, "sample_rate": 16000}'], P.CLOSE_UNSUPPORTED, "protocol version"),
    ([P.encode_message(P.End())], P.CLOSE_UNSUPPORTED, "end before start"),
    # wrong sample rates and fields
    ([_raw_start(sample_rate=4000)], P.CLOSE_INVALID, "sample_rate must be in"),
    ([_raw_start(sample_rate=96000)], P.CLOSE_INVALID, "sample_rate must be in"),
    ([_raw_start(sample_rate="16000")], P.CLOSE_INVALID, "'sample_rate' must be int"),
    ([_raw_start(sample_rate=16000.5)], P.CLOSE_INVALID, "'sample_rate' must be int"),
    ([_raw_start(sample_rate=10**400)], P.CLOSE_INVALID, "sample_rate must be in"),
    ([_raw_start()], P.CLOSE_INVALID, "needs field 'sample_rate'"),
    ([_raw_start(sample_rate=16000, channels=0)], P.CLOSE_INVALID, "channels must be in"),
    ([_raw_start(sample_rate=16000, format="mp3")], P.CLOSE_INVALID, "'format' must be one of"),
    ([_raw_start(sample_rate=16000, identity=[[10**400, 0]] * 68)], P.CLOSE_INVALID, "identity"),
    ([_raw_start(sample_rate=16000, identity=[[1, 2]] * 67)], P.CLOSE_INVALID, "identity"),
    # audio after start: odd byte counts, NaN/inf, out of range
    ([_start(), b"\x00\x01\x02"], P.CLOSE_INVALID, "not a whole number of 2-byte"),
    ([_start(channels=2, **_F32), b"\x00" * 12], P.CLOSE_INVALID, "not a whole number of 8-byte"),
    ([_start(**_F32), np.array([0.0, np.nan], "<f4").tobytes()], P.CLOSE_INVALID, "finite"),
    ([_start(**_F32), np.array([np.inf] * 320, "<f4").tobytes()], P.CLOSE_INVALID, "finite"),
    ([_start(**_F32), np.array([0.1, -1e6], "<f4").tobytes()], P.CLOSE_INVALID, "finite"),
    ([_start(), np.zeros(320, np.int16).tobytes(), '{"type": "dance", "version": 1}'],
     P.CLOSE_UNSUPPORTED, "unknown message type"),
    ([_start(), _start()], P.CLOSE_INVALID, "not allowed after start"),
]
# closed by the websockets layer itself (no `error` message first)
OVERSIZED = [
    (["x" * (MAX_MESSAGE_BYTES + 1)], P.CLOSE_TOO_BIG, "exceeds limit"),
    ([b"\x00" * (MAX_MESSAGE_BYTES + 2)], P.CLOSE_TOO_BIG, "exceeds limit"),
    ([_start(), np.zeros(MAX_MESSAGE_BYTES, np.int16).tobytes()], P.CLOSE_TOO_BIG, "exceeds limit"),
]


@pytest.fixture(scope="module")
def server():
    from engine.session import default_model_path

    if not default_model_path().is_file():
        pytest.skip(f"no model at {default_model_path()}")
    cfg = EngineConfig(port=_free_port(), max_message_bytes=MAX_MESSAGE_BYTES, providers="cpu")
    with ServerThread(cfg) as s:
        yield s


def load_good_clip(speech_wav) -> tuple[np.ndarray, int, np.ndarray]:
    """GOOD_SPEECH_S of real speech (int16, 22.05 kHz) and the frames the offline path gives for it."""
    import soundfile as sf

    pcm, sr = sf.read(speech_wav, dtype="int16")
    pcm = pcm[: int(GOOD_SPEECH_S * sr)]
    return pcm, sr, _offline(pcm, sr)["landmarks"]


@pytest.fixture(scope="module")
def good_clip(speech_wav):
    return load_good_clip(speech_wav)


def _health(srv) -> dict:
    with urllib.request.urlopen(srv.http + "/healthz", timeout=5) as r:
        return json.loads(r.read())


def _check_good(result, ref) -> None:
    frames, end, code = result
    assert code == P.CLOSE_NORMAL and end.dropped == 0, (code, end)
    assert [f.index for f in frames] == list(range(len(ref))) and end.frames == len(ref)
    np.testing.assert_allclose(np.stack([f.landmarks for f in frames]), ref, atol=2e-4, rtol=0)


async def _send_text_bytes(url: str, data: bytes) -> tuple[int, str]:
    """Send invalid UTF-8 in a text frame (the websockets layer must refuse it)."""
    async with connect(url, compression=None) as ws:
        await ws.send(data, text=True)
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    return ws.close_code, ws.close_reason


async def test_hostile_clients_get_close_codes_and_a_good_stream_loses_nothing(server, good_clip):
    pcm, sr, ref = good_clip
    good = asyncio.create_task(_stream(server.url, pcm, sr, pace_s=CHUNK_MS / 1000))
    await asyncio.sleep(0.1)
    t0 = time.perf_counter()
    for messages, code, words in HOSTILE:
        got_code, reason, replies = await _refused(server.url, *messages)
        what = repr(messages[-1])[:60]
        assert got_code == code, (what, got_code, reason)
        assert words in reason, (what, reason)
        errors = [m for m in replies if isinstance(m, P.Error)]
        assert len(errors) == 1 and errors[0].code == code and words in errors[0].reason, (what, replies)
    for messages, code, words in OVERSIZED:
        got_code, reason, _ = await _refused(server.url, *messages)
        assert got_code == code and words in reason, (repr(messages[-1])[:60], got_code, reason)
    assert await _send_text_bytes(server.url, b"\xff\xfe{}") == (P.CLOSE_INVALID, "invalid start byte at position 0")
    hostile_s = time.perf_counter() - t0
    assert not good.done(), f"the hostile cases took {hostile_s:.1f} s, longer than the good stream"
    _check_good(await good, ref)
    h = _health(server)
    assert h["status"] == "ok" and h["streams"] == 0, h


async def _flood(url: str, n: int, n_refused: int) -> tuple[list, list]:
    """Open n websockets at once; wait for n_refused of them to be closed by the server.

    Returns (connections still open, (code, reason) of those closed)."""
    async def one():
        try:
            return await connect(url, compression=None, open_timeout=FLOOD_TIMEOUT_S)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"

    conns = await asyncio.gather(*(one() for _ in range(n)))
    failed = [c for c in conns if isinstance(c, str)]
    assert not failed, f"{len(failed)} connections failed to open: {failed[:3]}"
    deadline = time.monotonic() + FLOOD_TIMEOUT_S
    while sum(ws.close_code is not None for ws in conns) < n_refused and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # an admitted connection must not be closed late
    closed = [(ws.close_code, ws.close_reason) for ws in conns if ws.close_code is not None]
    return [ws for ws in conns if ws.close_code is None], closed


async def test_a_thousand_connections_at_once_are_bounded(good_clip):
    """N_FLOOD connections arrive together: max_streams are admitted, the rest get 1013, a good stream
    beside them loses nothing, and the admitted slots are freed when those clients leave."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * N_FLOOD + 256  # client and server ends of every socket live in this process
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    pcm, sr, ref = good_clip
    cfg = EngineConfig(port=_free_port(), max_streams=FLOOD_MAX_STREAMS, providers="cpu")
    with ServerThread(cfg) as srv:
        good = asyncio.create_task(_stream(srv.url, pcm, sr, pace_s=CHUNK_MS / 1000))
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        admitted, refused = await _flood(srv.url, N_FLOOD, N_FLOOD - FLOOD_MAX_STREAMS + 1)
        flood_s = time.perf_counter() - t0
        assert len(admitted) == FLOOD_MAX_STREAMS - 1, (len(admitted), flood_s)  # the good stream holds one
        assert len(refused) == N_FLOOD - len(admitted)
        assert all(c == P.CLOSE_TRY_AGAIN and "server full" in r for c, r in refused), refused[:3]
        assert flood_s < FLOOD_TIMEOUT_S
        _check_good(await good, ref)
        await asyncio.gather(*(ws.close() for ws in admitted))
        # the slots are free again: a new stream is admitted and served in full
        deadline = time.monotonic() + 10
        while len(srv.server.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not srv.server.connections, f"{len(srv.server.connections)} connections left after the flood"
        frames, _, code = await _stream(srv.url, pcm[: sr // 2], sr)
        assert code == P.CLOSE_NORMAL and len(frames) == timing.n_frames(round(len(pcm[: sr // 2]) * 16000 / sr), 30)
        assert _health(srv)["streams"] == 0


# --- the pure parsers, fuzzed ------------------------------------------------------------------------
_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**500), max_value=10**500),
                       st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                       st.sampled_from(["start", "subscribe", "end", "pcm16", "f32", "json", "binary"]))
_JSON = st.recursive(
    _JSON_LEAF, lambda kids: st.lists(kids, max_size=8) | st.dictionaries(st.text(max_size=8), kids, max_size=6),
    max_leaves=80)
_KEYS = ["type", "version", "sample_rate", "format", "fps", "channels", "identity", "output", "token",
         "controls", "emotion", "smoothing"]
_START_LIKE = st.fixed_dictionaries(
    {"type": st.sampled_from(["start", "subscribe", "end"]), "version": st.sampled_from([1, 1, 2, True, "1"])},
    optional={k: _JSON for k in _KEYS[2:]},
) | st.fixed_dictionaries({"type": st.just("start"), "version": st.just(1),
                           "sample_rate": st.integers(7000, 49000),
                           "identity": st.lists(st.lists(_JSON_LEAF, min_size=2, max_size=2), min_size=68,
                                                max_size=68)})
_TEXT = st.one_of(st.text(max_size=200), st.binary(max_size=200), _JSON.map(json.dumps), _START_LIKE.map(json.dumps),
                  st.integers(1, 5000).map(lambda n: "[" * n), st.integers(1, 5000).map(lambda n: '{"a":' * n))


@settings(max_examples=250, deadline=None, derandomize=True)
@given(_TEXT)
def test_fuzz_client_parser_parses_or_raises_protocol_error(text):
    try:
        msg = P.parse_client_message(text)
    except P.ProtocolError as exc:
        assert exc.code in (P.CLOSE_INVALID, P.CLOSE_UNSUPPORTED) and exc.reason
        assert len(exc.close_reason().encode()) <= P.MAX_REASON_BYTES
        return
    assert isinstance(msg, (P.Start, P.Subscribe, P.End))
    assert P.parse_client_message(P.encode_message(msg)) == msg


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.one_of(_TEXT, st.fixed_dictionaries(
    {"type": st.sampled_from(["ready", "error", "end", "frame"]), "version": st.just(1)},
    optional={k: _JSON for k in ("fps", "model_fps", "lookahead_ms", "latency_ms", "model", "reason", "code",
                                 "index", "time", "chunk", "recv", "sent", "landmarks", "controls")}).map(json.dumps)))
def test_fuzz_server_parser_parses_or_raises_protocol_error(text):
    try:
        msg = P.parse_server_message(text)
    except P.ProtocolError as exc:
        assert exc.code in (P.CLOSE_INVALID, P.CLOSE_UNSUPPORTED)
        return
    assert isinstance(msg, (P.Ready, P.Error, P.End, P.FrameMessage))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=600), st.sampled_from(sorted(P.FORMATS)), st.integers(1, P.MAX_CHANNELS))
def test_fuzz_audio_decoder_parses_or_raises_protocol_error(data, fmt, channels):
    try:
        pcm = P.decode_audio(data, fmt, channels)
    except P.ProtocolError as exc:
        assert exc.code == P.CLOSE_INVALID
        return
    assert pcm.shape == (len(data) // (P.FORMATS[fmt].itemsize * channels), channels)
    assert pcm.dtype == P.FORMATS[fmt]
    if fmt == "f32":
        assert np.isfinite(pcm).all()
