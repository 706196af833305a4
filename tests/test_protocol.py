"""Protocol v1: every message survives a round trip; bad input gets the documented close code; fuzzing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import protocol as P


def _identity(seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    return tuple((float(x), float(y)) for x, y in rng.uniform(20, 230, (68, 2)))


@pytest.mark.parametrize("msg", [
    P.Start(),
    P.Start(sample_rate=48000, format="f32", channels=2, fps=60, output="json", identity=_identity(),
            emotion="happy", controls=True, smoothing=False, token="s3cret"),
    P.Subscribe(output="json", token="t"),
    P.End(),
])
def test_client_messages_round_trip(msg):
    text = P.encode_message(msg)
    assert json.loads(text)["version"] == P.PROTOCOL_VERSION
    assert P.parse_client_message(text) == msg


@pytest.mark.parametrize("msg", [
    P.Ready(fps=25, model_fps=30.0, lookahead_ms=80.0, latency_ms=106.667,
            model={"version": "v", "config_hash": "h", "layout": "ibug68", "frame": "canonical256",
                   "emotions": ["neutral", "happy"]}, controls=("jawOpen", "eyeBlinkLeft"), output="json", source="mic"),
    P.Error("audio message of 3 bytes is not a whole number of 2-byte sample frames", P.CLOSE_INVALID),
    P.End(frames=183, dropped=2),
])
def test_server_messages_round_trip(msg):
    assert P.parse_server_message(P.encode_message(msg)) == msg


@pytest.mark.parametrize("controls", [None, np.linspace(0, 1, 9, dtype=np.float32)])
def test_frames_round_trip_binary_and_json(controls):
    rng = np.random.default_rng(1)
    f = P.FrameMessage(index=4_000_000, audio_time_s=4_000_000 / 30, chunk=77, recv_time_s=1764061200.123456,
                       send_time_s=1764061200.125, landmarks=rng.uniform(0, 256, (68, 2)).astype(np.float32),
                       controls=controls)
    data = P.encode_frame_binary(f)
    assert data[:4] == b"KFLM" and len(data) == P.FRAME_HEADER_BYTES + 4 * (136 + (0 if controls is None else 9))
    assert P.decode_frame_header(data)[1:] == (f.index, f.chunk, f.audio_time_s, f.recv_time_s, f.send_time_s)
    for g in (P.decode_frame_binary(data), P.parse_server_message(P.encode_frame_json(f))):
        assert (g.index, g.chunk, g.audio_time_s, g.recv_time_s, g.send_time_s) == (
            f.index, f.chunk, f.audio_time_s, f.recv_time_s, f.send_time_s)
        np.testing.assert_array_equal(g.landmarks, f.landmarks)
        if controls is None:
            assert g.controls is None
        else:
            np.testing.assert_array_equal(g.controls, controls)


def test_binary_layout_matches_the_documented_offsets():
    lm = np.arange(136, dtype=np.float32).reshape(68, 2)
    data = P.encode_frame_binary(P.FrameMessage(7, 0.25, 3, 10.5, 11.25, lm))
    assert data[4] == 1 and data[5] == 0
    assert int.from_bytes(data[8:12], "little") == 7 and int.from_bytes(data[12:16], "little") == 3
    assert np.frombuffer(data[16:40], "<f8").tolist() == [0.25, 10.5, 11.25]
    np.testing.assert_array_equal(np.frombuffer(data[40:], "<f4"), lm.ravel())


@pytest.mark.parametrize("text, code, words", [
    ("{not json", P.CLOSE_INVALID, "bad JSON"),
    ('{"type": "start", "version": 1, "sample_rate": NaN}', P.CLOSE_INVALID, "bad JSON"),
    ("[1, 2]", P.CLOSE_INVALID, "JSON object"),
    ('{"type": "hello", "version": 1}', P.CLOSE_UNSUPPORTED, "unknown message type"),
    ('{"type": "start", "version": 2, "sample_rate": 16000}', P.CLOSE_UNSUPPORTED, "version 1 expected, got 2"),
    ('{"type": "start", "sample_rate": 16000}', P.CLOSE_INVALID, "'version'"),
    ('{"type": "start", "version": 1}', P.CLOSE_INVALID, "sample_rate"),
    ('{"type": "start", "version": 1, "sample_rate": 4000}', P.CLOSE_INVALID, "[8000, 48000] Hz, got 4000"),
    ('{"type": "start", "version": 1, "sample_rate": true}', P.CLOSE_INVALID, "must be int"),
    ('{"type": "start", "version": 1, "sample_rate": 16000, "format": "mp3"}', P.CLOSE_INVALID, "pcm16"),
    ('{"type": "start", "version": 1, "sample_rate": 16000, "fps": 24}', P.CLOSE_INVALID, "[25, 30, 60]"),
    ('{"type": "start", "version": 1, "sample_rate": 16000, "channels": 0}', P.CLOSE_INVALID, "channels"),
    ('{"type": "start", "version": 1, "sample_rate": 16000, "identity": [[1, 2]]}', P.CLOSE_INVALID, "68"),
    ('{"type": "start", "version": 1, "sample_rate": 16000, "controls": 1}', P.CLOSE_INVALID, "must be bool"),
])
def test_bad_client_messages_name_the_problem(text, code, words):
    with pytest.raises(P.ProtocolError) as info:
        P.parse_client_message(text)
    assert info.value.code == code
    assert words in info.value.reason


def test_identity_out_of_range_is_refused():
    ident = [[10.0, 10.0]] * 67 + [[1e9, 0.0]]
    with pytest.raises(P.ProtocolError, match="finite and in"):
        P.parse_identity(ident)


def test_audio_decoding_checks_byte_counts_and_values():
    pcm = np.array([[1, -2], [3, -4]], np.int16)
    np.testing.assert_array_equal(P.decode_audio(pcm.tobytes(), "pcm16", 2), pcm)
    with pytest.raises(P.ProtocolError, match="not a whole number of 4-byte") as info:
        P.decode_audio(pcm.tobytes()[:-2], "pcm16", 2)
    assert info.value.code == P.CLOSE_INVALID
    bad = np.array([0.1, np.nan], np.float32).tobytes()
    with pytest.raises(P.ProtocolError, match="finite") as info:
        P.decode_audio(bad, "f32", 1)
    assert info.value.code == P.CLOSE_INVALID
    x = np.array([0.5, -0.25], np.float32)
    np.testing.assert_array_equal(P.decode_audio(P.encode_audio(x, "f32"), "f32", 1)[:, 0], x)


def test_close_reason_fits_a_close_frame():
    err = P.ProtocolError(P.CLOSE_INVALID, "é" * 200)
    assert len(err.close_reason().encode()) <= 123


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.dictionaries(st.sampled_from(["type", "version", "sample_rate", "format", "fps", "channels",
                                                  "identity", "output", "token", "controls"]),
                                 st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                                           st.sampled_from(["start", "subscribe", "end", "pcm16", "json"])))
                 .map(json.dumps)))
def test_fuzz_client_parser_only_raises_protocol_errors(text):
    try:
        msg = P.parse_client_message(text)
    except P.ProtocolError as exc:
        assert exc.code in (P.CLOSE_INVALID, P.CLOSE_UNSUPPORTED)
        return
    assert P.parse_client_message(P.encode_message(msg)) == msg


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=700))
def test_fuzz_frame_decoder_only_raises_protocol_errors(data):
    try:
        P.decode_frame_binary(data)
    except P.ProtocolError as exc:
        assert exc.code == P.CLOSE_INVALID
