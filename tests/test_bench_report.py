"""A tiny real `kfusion bench latency` sweep, then `benchmarks.report`: sections between their own markers,
other sections (eval-quality) untouched, the CDF plot written, and a second run changes nothing."""

from __future__ import annotations

import json
import re

import pytest

from benchmarks.report import RESULTS_MD, build, replace_section

QUALITY = re.compile(r"<!-- eval-quality:begin.*?<!-- eval-quality:end -->", re.DOTALL)


def test_latency_sweep_and_report(tmp_path):
    from engine.cli import main

    results = tmp_path / "results"
    results.mkdir()
    assert main(["bench", "latency", "--streams", "1,3", "--seconds", "1.5", "--no-startup", "--port", "8897",
                 "--json", str(results / "latency.json")]) == 0
    d = json.loads((results / "latency.json").read_text())
    assert [r["streams"] for r in d["runs"]] == [1, 3]
    for r in d["runs"]:
        assert r["frames"] == r["frames_expected"] > 0
        assert 0 < r["server_ms"]["p50"] <= r["server_ms"]["p99"] <= r["server_ms"]["max"]
        assert r["end_to_end_ms"]["p50"] >= r["server_ms"]["p50"] * 0.5  # e2e contains the server time
        cdf = r["cdf"]["server_ms"]
        assert len(cdf) == len(r["cdf"]["quantiles_pct"]) and cdf == sorted(cdf)

    out = tmp_path / "RESULTS.md"
    original = RESULTS_MD.read_text() if RESULTS_MD.is_file() else "# Results\n"
    out.write_text(original)
    assert build(results, out, tmp_path / "images") == ["latency"]
    text = out.read_text()
    assert text.count("<!-- bench-latency:begin") == 1 and text.count("<!-- bench-latency:end -->") == 1
    rows = re.findall(r"^\| (\d+) \|", text.split("<!-- bench-latency:begin")[1], re.MULTILINE)
    assert rows[:2] == ["1", "3"]
    before = QUALITY.search(original)
    if before:
        assert QUALITY.search(text).group(0) == before.group(0), "the eval-quality section must be kept as it is"
    assert (tmp_path / "images" / "latency_cdf.png").stat().st_size > 10_000
    build(results, out, tmp_path / "images")
    assert out.read_text() == text, "regenerating from the same results must not change RESULTS.md"

    # a second run of the same benchmark gets its own section, drawn as a table like the first, without
    # borrowing the first run's picture
    (results / "latency-run2.json").write_text((results / "latency.json").read_text())
    assert build(results, out, tmp_path / "images") == ["latency", "latency-run2"]
    run2 = out.read_text().split("<!-- bench-latency-run2:begin")[1].split("<!-- bench-latency-run2:end")[0]
    assert re.findall(r"^\| (\d+) \|", run2, re.MULTILINE)[:2] == ["1", "3"]
    assert "latency_cdf.png" not in run2


def test_replace_section_keeps_everything_outside_its_markers():
    doc = "# R\n\nintro\n<!-- x:begin -->keep<!-- x:end -->\ntail\n"
    once = replace_section(doc, "latency", ["new body"])
    assert once.startswith(doc.rstrip("\n")) and "new body" in once
    twice = replace_section(once, "latency", ["newer body"])
    assert "new body" not in twice and "newer body" in twice
    assert twice.replace("newer body", "new body") == once


def test_report_refuses_an_empty_results_folder(tmp_path):
    with pytest.raises(ValueError, match="no benchmark results"):
        build(tmp_path, tmp_path / "RESULTS.md", tmp_path / "images")


def test_quality_bench_takes_the_lookahead_sweep_in_order_and_the_report_shows_its_spread(tmp_path):
    from benchmarks.bench_quality import default_models

    assert default_models(tmp_path) == ([], None)  # no sweep: the caller falls back to the shipped model
    for ms in (120, 0, 40):
        (tmp_path / f"la{ms}.onnx").write_bytes(b"")
    (tmp_path / "RECIPE.txt").write_text("one fine-tune per lookahead\n")
    models, recipe = default_models(tmp_path)
    assert [m.rsplit("/", 1)[1] for m in models] == ["la0.onnx", "la40.onnx", "la120.onnx"]
    assert recipe == "one fine-tune per lookahead"

    point = {"model": "la80.onnx", "lookahead_ms": 80, "latency_ms": 102, "mouth_ld": 0.0303,
             "mouth_ld_vs_static": 0.96, "lip_gap_corr": 0.44, "lip_gap_lag_ms": 0.0,
             "mouth_ld_per_clip": {"median": 0.028, "p99": 0.061, "max": 0.063}}
    d = {"machine": {"cpus": 2}, "settings": {"split": "test"}, "split": "test", "clips": 30,
         "static_face_mouth_ld": 0.0316, "recipe": recipe, "points": [point]}
    results = tmp_path / "results"
    results.mkdir()
    (results / "quality.json").write_text(json.dumps(d))
    out = tmp_path / "RESULTS.md"
    build(results, out, tmp_path / "images")
    text = out.read_text()
    assert "- Machine: cpus 2" in text and "Recipe: one fine-tune per lookahead" in text
    assert "| 80 | 102 | 3.03 | 0.96 | 2.8 / 6.1 / 6.3 | 0.44 | 0 | la80.onnx |" in text


def test_every_stored_result_carries_its_date_so_the_report_ignores_file_times(tmp_path):
    """A clone gives every file the checkout's time: RESULTS.md must come out the same whatever the mtimes."""
    import os
    import shutil

    from benchmarks.report import RESULTS_DIR

    stored = sorted(RESULTS_DIR.glob("*.json"))
    assert stored, f"no stored results in {RESULTS_DIR}"
    undated = [p.name for p in stored if "date_utc" not in json.loads(p.read_text())]
    assert not undated, f"results without date_utc (the report would print a file time for them): {undated}"

    picked = [p for p in stored if p.stem in ("capacity", "coldstart", "features", "model")]
    assert len(picked) == 4  # the four benchmarks that once wrote no date of their own
    for k, when in enumerate((1_000_000_000, 2_000_000_000)):  # 2001 and 2033
        results = tmp_path / f"results{k}"
        results.mkdir()
        for p in picked:
            shutil.copy(p, results / p.name)
            os.utime(results / p.name, (when, when))
        out = tmp_path / f"RESULTS{k}.md"
        out.write_text("# Results\n")
        build(results, out, tmp_path / f"images{k}")
    first, second = (tmp_path / "RESULTS0.md").read_text(), (tmp_path / "RESULTS1.md").read_text()
    assert first.replace("images0", "images1") == second.replace("images0", "images1")
    for p in picked:
        assert f"on {json.loads(p.read_text())['date_utc']} (results: `benchmarks/results/{p.name}`)" in first
