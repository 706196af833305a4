"""Tiny runs of `kfusion bench` model, coldstart, admission and scaleout: JSON keys present, timings sane."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


def _bench(tmp_path, *argv: str) -> dict:
    from engine.cli import main

    out = tmp_path / "result.json"
    assert main(["bench", *argv, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _sane(stats: dict, upper: float) -> None:
    assert set(stats) == {"median", "p99", "max"}
    assert 0 < stats["median"] <= stats["p99"] <= stats["max"] < upper, stats


def test_bench_model_small(tmp_path):
    res = _bench(
        tmp_path,
        "model",
        "--batches",
        "1,4",
        "--frames-per-stream",
        "12",
        "--no-paper",
        "--workdir",
        str(tmp_path),
    )
    assert set(res["batches"]) == {"1", "4"}
    for b, row in res["batches"].items():
        for engine in ("ort", "torch"):
            _sane(row[engine]["call_ms"], 10_000.0)
            _sane(row[engine]["stream_frame_ms"], 10_000.0)
            per_frame = row[engine]["call_ms"]["median"] / int(b)
            assert math.isclose(row[engine]["stream_frame_ms"]["median"], per_frame, rel_tol=1e-9)
        assert row["torch_over_ort"] > 0
    assert "paper_peer" not in res
    if "same config" in res["torch_peer"]:  # the torch peer is the ONNX file's own checkpoint
        assert res["max_abs_diff_px"] < 1e-3


def test_bench_model_rejects_bad_batches(tmp_path):
    from engine.cli import main

    assert main(["bench", "model", "--batches", "0", "--no-paper", "--workdir", str(tmp_path)]) == 2


@pytest.mark.slow
def test_paper_peer_shapes_and_input_checks():
    pytest.importorskip("transformers")
    import torch

    from benchmarks.paper_peer import FRAMES_PER_WINDOW, WINDOW_SAMPLES, PaperPeer

    peer = PaperPeer.build(seed=0)
    counts = peer.parameter_counts()
    assert 90e6 < counts["encoder"] < 100e6  # wav2vec2-base is about 94-95 M parameters
    identity = torch.from_numpy(np.full((1, 68, 2), 128.0, np.float32))
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal((1, WINDOW_SAMPLES)).astype(np.float32))
    out = peer(audio, identity)
    assert out.shape == (1, FRAMES_PER_WINDOW, 68, 2) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="16000"):
        peer(audio[:, :8000], identity)


@pytest.mark.slow
def test_bench_model_with_paper_peer(tmp_path):
    pytest.importorskip("transformers")
    res = _bench(
        tmp_path,
        "model",
        "--batches",
        "1",
        "--frames-per-stream",
        "10",
        "--paper-runs",
        "1",
        "--workdir",
        str(tmp_path),
    )
    p = res["paper_peer"]
    _sane(p["window_ms"], 60_000.0)
    assert p["live_frame_ms"] == p["window_ms"]["median"]
    assert math.isclose(p["live_compute_s_per_s"], 30 * p["window_ms"]["median"] / 1e3)
    assert p["ratio_live_vs_ours_b1"] > 1  # a 95 M-parameter window model costs more than one GRU step


@pytest.mark.slow
def test_bench_coldstart_small(tmp_path):
    res = _bench(tmp_path, "coldstart", "--runs", "1", "--serve-runs", "1", "--workdir", str(tmp_path))
    stages = ("imports", "model_loaded", "features_warm", "first_frame")
    for engine in ("ort", "torch"):
        medians = [res[engine][k]["median"] for k in stages]
        assert 0 < medians[0] and medians == sorted(medians) and medians[-1] < 120
    cold = [res["ort_cold"][k] for k in stages]
    assert cold == sorted(cold)
    assert res["torch_over_ort_first_frame"] > 0
    if isinstance(res["serve_healthz_s"], dict):
        _sane(res["serve_healthz_s"], 120.0)
    _sane(res["python_bare_s"], 120.0)
    assert res["serve_parser_imports_torch"] is False  # torch would add seconds to every server start


def test_bench_admission_small(tmp_path):
    from tests.realdevices import free_port

    port = free_port()
    res = _bench(tmp_path, "admission", "--streams", "4", "--per-wave", "2", "--gap-s", "0.3", "--seconds", "1.5",
                 "--client-procs", "1", "--max-load", "1.0", "--port", str(port), "--log-dir", str(tmp_path))
    for side, limit in (("limited", 1.0), ("unlimited", 0.0)):
        d = res[side]
        assert d["max_load"] == limit and d["offered"] == 4
        assert d["admitted"] + d["refused_1013"] + len(d["refused_other"]) == 4
        assert d["admitted_within_target"] == (not d["why"])
    # four light streams pass any limit: all admitted, every frame there
    assert res["unlimited"]["admitted"] == 4 and res["limited"]["admitted"] == 4
    assert res["limited"]["lost"] == 0 and res["limited"]["frames"] == res["limited"]["frames_expected"]
    assert res["settings"]["max_load"] == 1.0 and res["ratio_server_p99_limited_vs_unlimited"] > 0


def test_bench_scaleout_small_with_larger_chunks(tmp_path):
    """Two real `kfusion serve` processes (one worker, two workers), clients sending 40 ms chunks: every frame
    of every stream arrives on both, and the chunk size reaches the clients (the expected frame count follows
    it); a chunk size out of range is refused before any server starts."""
    from engine.cli import main
    from tests.realdevices import free_port

    res = _bench(tmp_path, "scaleout", "--streams", "4", "--seconds", "1.5", "--client-procs", "1", "--chunk-ms", "40",
                 "--port", str(free_port()), "--log-dir", str(tmp_path))
    assert res["settings"]["chunk_ms"] == 40 and set(res["trials"]) == {"workers_1", "workers_2"}
    for trials in res["trials"].values():
        t = trials["4"]
        assert t["n_errors"] == 0 and t["lost"] == 0 and t["frames"] == t["frames_expected"] > 0
        assert t["late_budget_ms"] == 40 + res["settings"]["lookahead_ms"] + 50
    assert main(["bench", "scaleout", "--streams", "4", "--chunk-ms", "500"]) == 2
