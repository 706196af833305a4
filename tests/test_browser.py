"""The browser page end to end: real `kfusion serve`, real headless Chromium whose fake microphone plays TTS speech.

KFUSION_UPDATE_SCREENSHOT=1 also writes the page's screenshot to docs/images/browser.png.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from realdevices import (
    Chromium,
    KfusionServer,
    PulseAudio,
    best_lag_correlation,
    offline_inner_lip_gaps,
    wait_for,
)

REPO = Path(__file__).resolve().parents[1]
FAKE_MIC_RATE_HZ = 48_000
LEAD_SILENCE_S = 0.3
TAIL_SILENCE_S = 1.0
FPS = 30
WARMUP_FRAMES = 30  # left out of the comparison while the recurrent state settles
COMPARE_FRAMES = 150  # 5 s of live frames compared with the offline model
MIN_TRACK_CORRELATION = 0.9  # live inner-lip gap track vs the offline model on the same audio


def _fake_mic_wav(path: Path, speech_16k: np.ndarray | None, seconds: float = 4.0) -> Path:
    """48 kHz mono wav for --use-file-for-fake-audio-capture (Chromium loops it): speech, or silence."""
    if speech_16k is None:
        y = np.zeros(int(seconds * FAKE_MIC_RATE_HZ), np.float32)
    else:
        y = soxr.resample(speech_16k, 16_000, FAKE_MIC_RATE_HZ).astype(np.float32)
        y = np.concatenate([np.zeros(int(LEAD_SILENCE_S * FAKE_MIC_RATE_HZ), np.float32), y,
                            np.zeros(int(TAIL_SILENCE_S * FAKE_MIC_RATE_HZ), np.float32)])
    sf.write(path, y, FAKE_MIC_RATE_HZ, subtype="PCM_16")
    return path


def _page_stats(chrome: Chromium, url: str, min_frames: int, timeout_s: float = 40.0) -> dict:
    chrome.navigate(url)

    def poll():
        st = chrome.evaluate("window.kfusion.stats()")
        if st["phase"] == "error":
            raise AssertionError(f"the page stopped with: {st['error']} (console: {chrome.console[-5:]})")
        return st if st["frames"] >= min_frames else None

    return wait_for(poll, timeout_s, f"{min_frames} frames on {url}", 0.25)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with KfusionServer(tmp_path_factory.mktemp("server"), "--providers", "cpu") as srv:
        yield srv


@pytest.fixture(scope="module")
def fake_mic(tmp_path_factory, speech_16k) -> tuple[Path, np.ndarray]:
    """The looping fake-mic wav, and the offline model's inner-lip gaps for three loops of it."""
    wav = _fake_mic_wav(tmp_path_factory.mktemp("fake-mic") / "speech48k.wav", speech_16k)
    loop16 = soxr.resample(sf.read(wav, dtype="float32")[0], FAKE_MIC_RATE_HZ, 16_000).astype(np.float32)
    return wav, offline_inner_lip_gaps(np.tile(loop16, 3), FPS)


@pytest.fixture(scope="module")
def speech_chrome(tmp_path_factory, fake_mic):
    with Chromium(tmp_path_factory.mktemp("chromium"), fake_mic[0]) as chrome:
        yield chrome


def _assert_mouth_follows_model(chrome: Chromium, ref_gaps: np.ndarray) -> tuple[float, float]:
    """The page's per-frame inner-lip gaps match the offline model's on the same audio (any start offset)."""
    track = np.array(chrome.evaluate("window.kfusion.track()"))
    assert np.array_equal(track[:, 0], np.arange(len(track))), "frame indices are not 0, 1, 2, ..."
    live = track[WARMUP_FRAMES:, 1]
    r, lag = best_lag_correlation(live, ref_gaps)
    ratio = float(np.ptp(live) / np.ptp(ref_gaps[lag:lag + len(live)]))
    assert r > MIN_TRACK_CORRELATION, f"the mouth does not follow the speech: r = {r:.3f} vs the offline model"
    assert 0.5 < ratio < 2.0, f"live mouth movement is {ratio:.2f}x the offline model's"
    return r, ratio


def test_page_streams_the_microphone_and_draws_a_moving_mouth(server, speech_chrome, fake_mic, tmp_path):
    st = _page_stats(speech_chrome, f"{server.url}/?autostart=1", WARMUP_FRAMES + COMPARE_FRAMES)
    assert st["ready"]["source"] == "client" and st["ready"]["output"] == "binary"
    assert st["contextRateHz"] == 16_000, "the AudioContext did not run at 16 kHz"
    assert st["lastIndex"] == st["frames"] - 1, "frames were skipped or arrived out of order"
    assert 24 <= st["frameRate"] <= 36, f"frames arrive at {st['frameRate']:.1f}/s, not at the audio pace"
    assert 0 < st["latencyP50Ms"] < 250, f"end-to-end p50 {st['latencyP50Ms']:.1f} ms"
    r, ratio = _assert_mouth_follows_model(speech_chrome, fake_mic[1])
    shot = speech_chrome.screenshot(tmp_path / "browser.png")
    assert shot.stat().st_size > 20_000
    if os.environ.get("KFUSION_UPDATE_SCREENSHOT") == "1":
        (REPO / "docs" / "images").mkdir(parents=True, exist_ok=True)
        speech_chrome.screenshot(REPO / "docs" / "images" / "browser.png")
    print(f"browser: {st['frames']} frames at {st['frameRate']:.1f}/s, latency p50 {st['latencyP50Ms']:.1f} ms "
          f"p95 {st['latencyP95Ms']:.1f} ms (server share {st['serverP50Ms']:.2f} ms), mouth track r={r:.3f} "
          f"range ratio {ratio:.2f} vs offline")


def test_page_resamples_a_48khz_audio_context(server, speech_chrome, fake_mic):
    """With the AudioContext at 48 kHz the worklet's own resampler makes the 16 kHz PCM."""
    st = _page_stats(speech_chrome, f"{server.url}/?autostart=1&ctxRate=48000", WARMUP_FRAMES + COMPARE_FRAMES)
    assert st["contextRateHz"] == 48_000
    assert 24 <= st["frameRate"] <= 36, f"frames arrive at {st['frameRate']:.1f}/s, not at the audio pace"
    _assert_mouth_follows_model(speech_chrome, fake_mic[1])


def test_page_sends_larger_chunks_when_asked(server, speech_chrome, fake_mic):
    """?chunkMs=40: half the audio messages of the default 20 ms, the same frames; a bad value is refused."""
    st = _page_stats(speech_chrome, f"{server.url}/?autostart=1&chunkMs=40", WARMUP_FRAMES + COMPARE_FRAMES)
    assert st["chunkMs"] == 40
    assert 24 <= st["frameRate"] <= 36, f"frames arrive at {st['frameRate']:.1f}/s, not at the audio pace"
    chunks_per_s = st["chunksSent"] / (st["frames"] / FPS)
    assert 20 <= chunks_per_s <= 30, f"{chunks_per_s:.1f} messages per second of audio, expected 25 at 40 ms"
    _assert_mouth_follows_model(speech_chrome, fake_mic[1])
    speech_chrome.navigate(f"{server.url}/?autostart=1&chunkMs=5")
    st = wait_for(lambda: (s := speech_chrome.evaluate("window.kfusion.stats()"))["phase"] == "error" and s,
                  20, "the page to refuse chunkMs=5")
    assert "chunkMs must be a whole number of ms in [10, 200], got '5'" in st["error"] and st["chunksSent"] == 0


def test_page_json_output_and_stop(server, speech_chrome):
    st = _page_stats(speech_chrome, f"{server.url}/?autostart=1&output=json", 45)
    assert st["ready"]["output"] == "json" and st["lastIndex"] == st["frames"] - 1
    speech_chrome.evaluate("window.kfusion.stop()")
    end = wait_for(lambda: speech_chrome.evaluate("window.kfusion.stats()")["end"], 10, "the server's end message")
    assert end["frames"] >= st["frames"] and end["dropped"] == 0


@pytest.mark.slow
def test_page_reports_a_refused_token(tmp_path, fake_mic):
    with KfusionServer(tmp_path / "server", "--providers", "cpu", "--token", "s3cret") as srv, \
            Chromium(tmp_path / "chromium", fake_mic[0]) as chrome:
        chrome.navigate(f"{srv.url}/?autostart=1&token=wrong")
        st = wait_for(lambda: (s := chrome.evaluate("window.kfusion.stats()"))["phase"] == "error" and s,
                      20, "the page to report the refusal")
        assert "1008" in st["error"] and st["frames"] == 0
        st = _page_stats(chrome, f"{srv.url}/?autostart=1&token=s3cret", 15)
        assert st["ready"]["source"] == "client"


@pytest.mark.slow
def test_page_shows_the_server_microphone(tmp_path, speech_16k):
    """source=server: the page subscribes to `kfusion serve --mic` (a PulseAudio virtual mic playing speech)."""
    speech = speech_16k[: 16_000 * 3]
    ref = offline_inner_lip_gaps(np.concatenate([np.zeros(16_000 * 2, np.float32), speech,
                                                 np.zeros(16_000, np.float32)]), FPS)
    with PulseAudio(tmp_path / "pulse") as pulse, \
            KfusionServer(tmp_path / "server", "--providers", "cpu", "--mic", "--mic-device", "pulse") as srv, \
            Chromium(tmp_path / "chromium") as chrome:
        st = _page_stats(chrome, f"{srv.url}/?autostart=1&source=server", 30)
        assert st["ready"]["source"] == "mic" and st["contextRateHz"] is None
        end_t = pulse.feed((np.clip(speech, -1, 1) * 32767).astype(np.int16))
        wait_for(lambda: time.monotonic() > end_t + 0.3, 10, "the speech to play")
        track = np.array(chrome.evaluate("window.kfusion.track()"))
    assert len(track) >= 90 and np.all(np.diff(track[:, 0]) > 0)
    r, _ = best_lag_correlation(track[-90:, 1], ref)
    assert r > MIN_TRACK_CORRELATION, f"the page's mouth does not follow the server mic: r = {r:.3f}"


def test_page_waits_for_a_full_server_then_streams(tmp_path, fake_mic):
    """Told 1013 (server full) before `ready`, the page says so, waits and tries again, and streams once the
    one slot frees; the stream that held the slot was never disturbed."""
    from websockets.sync.client import connect

    from engine import protocol as P

    with KfusionServer(tmp_path / "server", "--providers", "cpu", "--max-streams", "1") as srv, \
            Chromium(tmp_path / "chromium", fake_mic[0]) as chrome:
        occupant = connect(srv.url.replace("http://", "ws://") + "/ws", compression=None)
        occupant.send(P.encode_message(P.Start(sample_rate=16_000)))
        assert isinstance(P.parse_server_message(occupant.recv(timeout=10)), P.Ready)
        chrome.navigate(f"{srv.url}/?autostart=1")
        wait_for(lambda: chrome.evaluate("window.kfusion.stats()")["phase"] == "waiting", 20,
                 "the page to wait for a free slot")
        status = chrome.evaluate("document.getElementById('status').textContent")
        assert "server full" in status and "trying again in" in status, status
        occupant.close()
        st = wait_for(lambda: (s := chrome.evaluate("window.kfusion.stats()"))["frames"] >= 30 and s, 30,
                      "frames once the slot is free")
        assert st["error"] is None and st["ready"]["source"] == "client"
