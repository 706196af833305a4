"""Provider choice: a CUDA session that quietly fell back to the CPU is refused (cuda) or reported (auto);
`kfusion bench providers` compares two sessions and skips where there is no CUDA provider.

The CUDA side itself ran on a lent GPU machine (benchmarks/results/providers.json); here the CUDA provider is
made to look installed but fail, which is what onnxruntime-gpu does when its CUDA libraries do not load."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from engine.session import ModelSession


@pytest.fixture
def cuda_listed_but_broken(monkeypatch):
    """ONNX Runtime lists CUDA, but a session asked for it runs on the CPU (this CPU build ignores CUDA)."""
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    calls = []
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: calls.append(1), raising=False)
    return calls


def test_cuda_that_falls_back_to_cpu_is_refused(cuda_listed_but_broken):
    with pytest.raises(ValueError, match=r"providers='cuda': the CUDA provider of onnxruntime-gpu did not load"):
        ModelSession(providers="cuda")
    assert cuda_listed_but_broken == [1]  # the pip-installed CUDA libraries were offered first


def test_auto_that_falls_back_to_cpu_warns_and_runs(cuda_listed_but_broken, caplog):
    with caplog.at_level(logging.WARNING, logger="kfusion.session"):
        s = ModelSession(providers="auto")
    assert s.providers[0] == "CPUExecutionProvider"
    assert "did not load" in caplog.text and "CPUExecutionProvider" in caplog.text
    lm, _ = s.run(np.zeros((1, 1, s.meta.window_hops, s.meta.n_features), np.float32),
                  s.meta.mean_face[None].astype(np.float32), s.initial_state(1))
    assert lm.shape == (1, 1, 68, 2) and np.isfinite(lm).all()


def test_cpu_choice_never_touches_cuda(cuda_listed_but_broken, caplog):
    with caplog.at_level(logging.WARNING, logger="kfusion.session"):
        s = ModelSession(providers="cpu")
    assert s.providers == ["CPUExecutionProvider"]
    assert cuda_listed_but_broken == [] and "did not load" not in caplog.text


def test_bench_providers_compare_two_cpu_sessions():
    from benchmarks.bench_providers import compare

    a, b = ModelSession(providers="cpu"), ModelSession(providers="cpu")
    res = compare(a, b, batches=(1, 4))
    assert res["parity"]["frames"] > 200  # the ~9.8 s demo speech at 30 fps
    assert res["parity"]["max_abs_px"] == 0.0  # the same provider gives the same bits
    assert set(res["cost_by_batch"]) == {"1", "4"}
    for row in res["cost_by_batch"].values():
        for side in ("cpu_ms", "cuda_ms"):
            assert 0 < row[side]["p50"] <= row[side]["p99"] <= row[side]["max"] < 1000.0
        assert row["ratio_cuda_over_cpu_p50"] == pytest.approx(row["cuda_ms"]["p50"] / row["cpu_ms"]["p50"], rel=1e-2)


def test_bench_providers_skips_without_cuda(tmp_path, capsys, monkeypatch):
    from engine.cli import main

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    out = tmp_path / "providers.json"
    assert main(["bench", "providers", "--json", str(out)]) == 0
    assert "skipped: it needs onnxruntime-gpu and a GPU" in capsys.readouterr().out
    assert not out.exists()  # a CPU-only `make bench` keeps the GPU machine's results
