"""The benchmarks' two load generators against a real server: every frame, the right counts, sane timings."""

from __future__ import annotations

import pytest
from test_server import ServerThread, _free_port

from benchmarks.load_clients import run_clients, summarize
from engine import timing
from engine.config import EngineConfig

SECONDS = 2.0
CHUNK_MS = 20
LOOKAHEAD_MS = 80.0  # the default model's


@pytest.mark.parametrize("client", ["lean", "stream"])
def test_load_client_gets_every_frame_in_real_time(client):
    n = 4
    with ServerThread(EngineConfig(port=_free_port(), providers="cpu")) as s:
        results, cpu_s = run_clients(s.url, n, SECONDS, n_procs=1, chunk_ms=CHUNK_MS, client=client)
    per_stream = timing.n_frames(int(SECONDS * 1000 / CHUNK_MS) * 16 * CHUNK_MS, 30)
    assert [r["error"] for r in results] == [None] * n
    assert [(r["frames"], r["expected"], r["close"], r["dropped"]) for r in results] == [(per_stream, per_stream, 1000, 0)] * n
    summary = summarize(results, SECONDS, CHUNK_MS, LOOKAHEAD_MS, 50.0)
    assert summary["lost"] == 0 and summary["late"] == 0 and summary["late_frames_server_ms"]["n"] == 0
    for r in results:  # lag and server time are per frame, in the same order (summarize pairs them)
        assert len(r["lag"]) == len(r["server"]) == r["frames"]
    tight = summarize(results, SECONDS, CHUNK_MS, LOOKAHEAD_MS, -CHUNK_MS - LOOKAHEAD_MS)  # every frame "late"
    assert tight["late"] == tight["late_frames_server_ms"]["n"] == n * per_stream
    assert len(results[0]["e2e"]) == per_stream and len(results[0]["server"]) == per_stream
    lag = summary["audio_lag_ms"]  # paced in real time: a frame arrives about chunk + lookahead after its audio
    assert CHUNK_MS + LOOKAHEAD_MS - 25 < lag["p50"] < CHUNK_MS + LOOKAHEAD_MS + 50, lag
    assert 0 < summary["server_ms"]["p50"] < 50 and 0 < cpu_s < SECONDS * n


def test_unknown_load_client_is_refused():
    with pytest.raises(ValueError, match="stream, lean.*'fast'"):
        run_clients("ws://127.0.0.1:1/ws", 1, 1.0, client="fast")


def test_failure_reasons_name_the_frames_and_the_servers_share_of_late_ones():
    from benchmarks.load_clients import failure_reasons, pcts

    s = {"dropped": 0, "late": 3, "lost": 2, "late_frames_server_ms": pcts([4.0, 5.0, 6.0])}
    assert failure_reasons(s) == ["3 frames late (server time for them: median 5.0 ms)", "2 frames lost"]
    assert failure_reasons({"dropped": 0, "late": 0, "lost": 0, "late_frames_server_ms": pcts([])}) == []
    # with a p99 target (capacity and scale-out trials): failed streams and the p99 come first
    ok = {"n_errors": 0, "errors": [], "dropped": 0, "late": 0, "lost": 0, "late_frames_server_ms": pcts([]),
          "server_ms": pcts([1.0, 2.0, 3.0])}
    assert failure_reasons(ok, 50.0) == []
    bad = {**ok, "n_errors": 1, "errors": ["boom"], "server_ms": pcts([60.0] * 3), "dropped": 4}
    assert failure_reasons(bad, 50.0) == ["1 streams failed: ['boom']", "server p99 60.0 ms > 50.0 ms",
                                         "4 frames dropped"]
    assert failure_reasons({**ok, "server_ms": pcts([])}, 50.0) == ["server p99 None ms > 50.0 ms"]


def test_capacity_at_a_fixed_count_counts_the_passing_trials_each_way(tmp_path):
    import json

    from engine.cli import main
    from engine.session import default_model_path

    out = tmp_path / "repeat.json"
    model = str(default_model_path())  # --model: the shipped file named explicitly, as a user's own would be
    assert main(["bench", "capacity", "--at", "2", "--repeats", "2", "--seconds", "1.5", "--client-procs", "1",
                 "--port", str(_free_port()), "--json", str(out), "--model", model, "--chunk-ms", "40"]) == 0
    res = json.loads(out.read_text())
    assert res["streams"] == 2 and res["settings"]["repeats"] == 2 and res["settings"]["chunk_ms"] == 40
    assert res["settings"]["model_path"] == model and res["settings"]["model"].startswith("stream-")
    for side, passed in (("batched", "batched_passed"), ("unbatched", "peer_unbatched_passed")):
        trials = res[side]["trials"]
        assert len(trials) == 2 and all(t["streams"] == 2 and t["frames"] == t["frames_expected"] for t in trials)
        assert res[passed] == res[side]["passed"] == sum(t["ok"] for t in trials)
        assert res[side]["late_frames_per_trial"] == [t["late"] for t in trials]
    assert res["pass_rate_batched"] == res["batched_passed"] / 2
    from benchmarks.report import build  # the report gives one row per trial, batched beside the peer

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "capacity-at2.json").write_text(out.read_text())
    assert build(tmp_path / "results", tmp_path / "RESULTS.md", tmp_path) == ["capacity-at2"]
    assert (tmp_path / "capacity_trials.png").stat().st_size > 10_000, "every fixed-count trial, drawn"
    md = (tmp_path / "RESULTS.md").read_text()
    assert f"**{res['batched_passed']} of 2** trials of 2 streams passed batched" in md
    rows = [line for line in md.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 2 and all(line.count("ok" if t["ok"] else "FAIL") for line, t in zip(rows, res["batched"]["trials"]))
    assert main(["bench", "capacity", "--at", "2", "--repeats", "0"]) == 2  # a bad count is refused up front
    assert main(["bench", "capacity", "--at", "2", "--chunk-ms", "5"]) == 2  # and a chunk below 10 ms
    assert main(["bench", "capacity", "--at", "2", "--model", "/no/such/model.onnx"]) == 2  # and a missing model


def test_cpu_lists_for_pinning_the_server_and_the_clients():
    import os

    from benchmarks.bench_capacity import parse_cpus

    mine = sorted(os.sched_getaffinity(0))
    assert parse_cpus("", "--client-cpus") is None and parse_cpus(None, "--client-cpus") is None
    assert parse_cpus(str(mine[0]), "--server-cpus") == {mine[0]}
    assert parse_cpus(",".join(map(str, mine)), "--client-cpus") == set(mine)
    assert parse_cpus(f"{mine[0]}-{mine[0]}", "--client-cpus") == {mine[0]}  # a range, of one CPU here
    with pytest.raises(ValueError, match="--client-cpus: expected CPU numbers like 0, 1-7.*'one'"):
        parse_cpus("one", "--client-cpus")
    with pytest.raises(ValueError, match=r"--server-cpus: CPUs \[4096\] are not all among"):
        parse_cpus("4096", "--server-cpus")


def test_pinned_load_clients_get_every_frame():
    import os

    cpu = max(os.sched_getaffinity(0))
    with ServerThread(EngineConfig(port=_free_port(), providers="cpu")) as s:
        results, _ = run_clients(s.url, 2, 1.0, n_procs=1, chunk_ms=CHUNK_MS, client="lean", cpus=frozenset({cpu}))
    assert [(r["error"], r["frames"] == r["expected"] > 0) for r in results] == [(None, True)] * 2


def test_capacity_set_up_in_words():
    from benchmarks.report import capacity_setup

    def run(server, clients):
        return {"machine": {"cpus": 16, "server_cpus": server, "client_cpus": clients}}

    assert capacity_setup(run([0], [1, 2, 3])) == "16-CPU machine: server alone on 1 CPU(s), clients on 3 others"
    assert capacity_setup(run([0, 1], [0, 1])) == "16-CPU machine: server and clients sharing 2 CPUs"
    assert capacity_setup(run("any", "any")) == capacity_setup({"machine": {"cpus": 16}}) \
        == "16-CPU machine: server and clients sharing all its CPUs"
    larger = {**run("any", "any"), "settings": {"chunk_ms": 40}}  # a chunk size other than the clients' 20 ms is named
    assert capacity_setup(larger) == "16-CPU machine, 40 ms chunks: server and clients sharing all its CPUs"
