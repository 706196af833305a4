"""Regenerate benchmarks/RESULTS.md sections and plots from benchmarks/results/*.json (run by `make bench`).

Usage: python -m benchmarks.report [--results benchmarks/results] [--out benchmarks/RESULTS.md]
Each benchmark gets its own section between `<!-- bench-NAME:begin -->` and `<!-- bench-NAME:end -->`;
everything outside those markers (e.g. the eval-quality section) is kept as it is.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from benchmarks.load_clients import DEFAULT_CHUNK_MS
from benchmarks.run_labels import RUN_BY

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
IMAGES_DIR = REPO / "docs" / "images"
CDF_PNG = "latency_cdf.png"
SCALEOUT_PNG = "scaleout_p99.png"
CAPACITY_PNG = "capacity_trials.png"
MAX_GENERIC_ROWS = 40
SKIP_KEYS = {"cdf"}  # raw plot data, not for tables


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _p50_p99_max(p: dict) -> str:
    return f"{_fmt(p['p50'])} / {_fmt(p['p99'])} / {_fmt(p['max'])}"


def _is_pcts(d) -> bool:
    return isinstance(d, dict) and "p99" in d and ("p50" in d or "median" in d)


def _walk(d, path=()):
    """(path, value) of every percentile dict and every scalar, depth first, skipping SKIP_KEYS."""
    if _is_pcts(d):
        yield path, d
        return
    if isinstance(d, dict):
        for k, v in d.items():
            if k not in SKIP_KEYS:
                yield from _walk(v, (*path, str(k)))
    elif not isinstance(d, list):
        yield path, d


def _machine(d) -> str:
    m = d.get("machine")
    if isinstance(m, dict):  # nested dicts (the CPU's description) one level down: "cpu model AMD EPYC"
        return ", ".join(f"{k} {_fmt(v)}" if not isinstance(v, dict) else
                         ", ".join(f"{k} {k2} {_fmt(v2)}" for k2, v2 in v.items()) for k, v in m.items())
    return _fmt(m)


def _settings(d) -> str:
    s = d.get("settings")
    if isinstance(s, dict):
        return ", ".join(f"{k}={json.dumps(v) if isinstance(v, list | dict) else _fmt(v)}" for k, v in s.items())
    return _fmt(s)


def _head(name: str, d: dict, path: Path) -> list[str]:
    # the run's own record, never the file's time: a clone gives every file the checkout's time
    date = d.get("date_utc") or "an unrecorded date"
    how = RUN_BY.get(name, f"`kfusion bench {name}`")
    return [f"## Benchmark: {name}", "", f"{how} on {date} (results: `benchmarks/results/{path.name}`).",
            "", f"- Machine: {_machine(d)}", f"- Settings: {_settings(d)}"]


def _generic(name: str, d: dict, path: Path) -> list[str]:
    """Any benchmark's JSON: a median/p99/max table of every percentile dict, then ratios and headline numbers."""
    lines = _head(name, d, path)
    rows, ratios, scalars = [], [], []
    for p, v in _walk({k: v for k, v in d.items() if k not in ("machine", "settings")}):
        label = " / ".join(p)
        if _is_pcts(v):
            med = v.get("p50", v.get("median"))
            rows.append(f"| {label} | {_fmt(med)} | {_fmt(v.get('p99'))} | {_fmt(v.get('max'))} |")
        elif p and re.search(r"ratio|_over_", p[-1]) and isinstance(v, int | float):
            ratios.append(f"- {label}: **{_fmt(v)}**")
        elif (len(p) <= 2 and isinstance(v, int | float)) or (len(p) == 1 and isinstance(v, str) and len(v) < 120):
            scalars.append(f"- {label}: {_fmt(v)}")
    if ratios:
        lines += ["", "Ratios against the peer measured in the same run:", "", *ratios]
    if scalars:
        lines += ["", *scalars[:MAX_GENERIC_ROWS]]
    if rows:
        lines += ["", "| measure | median | p99 | max |", "| --- | ---: | ---: | ---: |", *rows[:MAX_GENERIC_ROWS]]
        if len(rows) > MAX_GENERIC_ROWS:
            lines.append(f"\n({len(rows) - MAX_GENERIC_ROWS} more rows in the JSON)")
    return lines


def _latency(name: str, d: dict, path: Path) -> list[str]:
    if "runs" not in d:  # an old single-run file
        return _generic(name, d, path)
    lines = _head(name, d, path)
    lines += ["", ("server = chunk arrival -> frame handed to the socket; end-to-end = client send of the chunk -> "
              "frame arrival; lag = the speech instant -> frame arrival (includes the chunk and the model's "
              "lookahead). All in ms; p50 / p99 / max."), "",
              ("| streams | server | end-to-end | audio lag p99 | late | dropped | features p50/p99 | batch wait "
              "p50/p99 | model p50/p99 | send queue p50/p99 | rows/batch | server CPU ms per stream-s | "
              "server p50 / bare model p50 |"),
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    three = _p50_p99_max
    two = lambda p: f"{_fmt(p['p50'])} / {_fmt(p['p99'])}"
    for r in d["runs"]:
        st = r["stages_ms"]
        lines.append(f"| {r['streams']} | {three(r['server_ms'])} | {three(r['end_to_end_ms'])} | "
                     f"{_fmt(r['audio_lag_ms']['p99'])} | {r['late']} | {r['dropped']} | {two(st['features'])} | "
                     f"{two(st['queue_batch_wait'])} | {two(st['model'])} | {two(st['send_queue'])} | "
                     f"{_fmt(r['batches']['mean_rows'])} | {_fmt(r['cpu']['server_ms_per_stream_second'])} | "
                     f"{_fmt(r['ratio_server_p50_to_bare_model_p50'])} |")
    peer = d["runs"][0]["peer_bare_model_ms"]
    lines += ["", (f"Peer: one bare model call (batch 1, one frame) on the same session: median {_fmt(peer['p50'])} ms, "
              f"p99 {_fmt(peer['p99'])} ms (first run). A frame is late when its audio lag exceeds "
              f"{_fmt(d['runs'][0]['late_budget_ms'])} ms.")]
    if d.get("startup"):
        lines.append(f"Start-up of `kfusion serve`: /healthz after {_fmt(d['startup']['healthz_s'])} s, first frame "
                     f"after {_fmt(d['startup']['first_frame_s'])} s.")
    if name == "latency" and any(r.get("cdf", {}).get("server_ms") for r in d["runs"]):  # drawn from the first run
        lines += ["", f"![latency CDF](../docs/images/{CDF_PNG})"]
    return lines


def _scaleout(name: str, d: dict, path: Path) -> list[str]:
    lines = _head(name, d, path)
    w = d["settings"]["workers"]
    labels = list(d["trials"])
    best = d["streams_within_target"]
    lines += ["", (f"Streams within target (server p99 <= {_fmt(d['settings']['server_p99_target_ms'])} ms, no frame "
              f"late, dropped or lost): **{best[labels[0]]}** with one process, **{best[labels[-1]]}** with "
              f"`--workers {w}`: ratio **{_fmt(d['ratio_streams_within_target'])}** (peer: one process, same run)."),
              "", "| streams | " + " | ".join(f"{lab}: server p50 / p99 ms, ok, server CPU share" for lab in labels)
              + f" | p99 ratio {labels[-1]} / {labels[0]} |", "| ---: |" + " ---: |" * (len(labels) + 1)]
    for n in d["settings"]["streams"]:
        cells = []
        for lab in labels:
            t = d["trials"][lab][str(n)]
            cells.append(f"{_fmt(t['server_ms']['p50'])} / {_fmt(t['server_ms']['p99'])}, "
                         f"{'ok' if t['ok'] else 'FAIL'}, {_fmt(t['server_cpu_share'])}")
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {_fmt(d['ratio_server_p99_by_streams'].get(str(n)))} |")
    if name == "scaleout":  # the picture is drawn from the first run only
        lines += ["", f"![scale-out p99](../docs/images/{SCALEOUT_PNG})"]
    return lines


def _quality(name: str, d: dict, path: Path) -> list[str]:
    lines = _head(name, d, path)
    lines += ["", (f"Mouth LD and lip-gap lag on the pack's {d['split']} split ({d['clips']} clips) for the same recipe "
              f"trained with each lookahead; latency = lookahead + 20 ms chunk + 2 ms processing. Peer: the still "
              f"face, mouth LD {_fmt(100 * d['static_face_mouth_ld'])} %."), "",
              ("| lookahead ms | latency ms | mouth LD % | vs still face | per clip: median / p99 / max % | lip-gap r "
               "| lag ms | model |"),
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    if d.get("recipe"):
        lines[-2:-2] = [f"Recipe: {d['recipe']}", ""]
    for q in d["points"]:
        c = q.get("mouth_ld_per_clip")
        spread = f"{_fmt(100 * c['median'])} / {_fmt(100 * c['p99'])} / {_fmt(100 * c['max'])}" if c else "n/a"
        lines.append(f"| {_fmt(q['lookahead_ms'])} | {_fmt(q['latency_ms'])} | {_fmt(100 * q['mouth_ld'])} | "
                     f"{_fmt(q['mouth_ld_vs_static'])} | {spread} | {_fmt(q['lip_gap_corr'])} | "
                     f"{_fmt(q['lip_gap_lag_ms'])} | {q['model']} |")
    return lines + ["", "![quality against lookahead](../docs/images/quality_lookahead.png)"]


def _articulation(name: str, d: dict, path: Path) -> list[str]:
    from benchmarks.bench_articulation import PLOT_NAME

    st = d["settings"]
    t = st["targets"]
    lines = _head(name, d, path)
    engine = st.get("engine", "espeak")
    who = {"espeak": f"{st['voices']} espeak-ng voice variants that no training corpus used",
           "flite": f"flite's held-out voice in {st['voices']} renditions (no training corpus used it; other flite "
                    "voices may be in the training corpus)",
           "intl": f"{st['voices']} of festival's Italian, Czech, Finnish and Catalan voices that no training corpus "
                   "used, each in its own language (other voices of the first three languages may be in the training "
                   "corpus)",
           "festival": f"festival's English voices in {st['voices']} renditions (as they are, 15 % slower 3 semitones "
                       "up, 15 % faster 3 semitones down); every training corpus holds these voices, so only the "
                       "sentences are new",
           "grid": f"the speakers of {st['voices']} GRID clips of the pack's test split (real speech no model heard; "
                   "the clips do not say which speaker is which)"}[engine]
    if st.get("vocal_tract", 1.0) != 1.0:
        who += f", every frequency scaled by {_fmt(st['vocal_tract'])} with the duration kept (`--vocal-tract`)"
    said = (f"{st['utterances']} utterances: {st['sentences']} sentences written for this benchmark, spoken by {who}."
            if engine != "grid" else
            f"{st['utterances']} recordings: {st['sentences']} GRID sentences (their words are spelt by the clip names) "
            f"spoken by {who}. The phone times come from festival's English voices saying the same words, warped onto "
            "each recording (export/synth/align.py); `tracked_truth` is the clip's own tracked lips at those phones, "
            "so its score says how far to trust the times and what a perfect model would reach.")
    lines += ["", (f"{said} Closed: the inner-lip gap "
                   f"falls to {_fmt(st['closed_gap_pct'])} % of the eye distance or less during a p, b or m; open: it "
                   f"reaches {_fmt(st['open_gap_pct'])} % during an open vowel. Separation: the chance that an open "
                   f"vowel's widest gap beats a bilabial's narrowest. Our targets: closed >= {_fmt(t['closed_fraction'])}, "
                   f"opened >= {_fmt(t['opened_fraction'])}, separation >= {_fmt(t['separation'])}. Peer: {d['peer']}."),
              "", ("| model | closed | opened | separation | p/b/m gap % (p90) | open-vowel gap % (p10) | "
                   "closure vs phone middle ms | closed p / b / m |"),
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for model, m in d["models"].items():
        per = " / ".join(_fmt(m["by_bilabial"][p]["closed_fraction"]) for p in ("p", "b", "m"))
        lines.append(f"| {model} | {_fmt(m['closed_fraction'])} | {_fmt(m['opened_fraction'])} | "
                     f"{_fmt(m['separation'])} | {_fmt(m['bilabial_gap_pct'])} ({_fmt(m['bilabial_gap_p90_pct'])}) | "
                     f"{_fmt(m['open_vowel_gap_pct'])} ({_fmt(m['open_vowel_gap_p10_pct'])}) | "
                     f"{_fmt(m['closure_offset_ms'])} | {per} |")
    lines += ["", (f"Streaming over the peer: median p/b/m gap x{_fmt(d['ratio_bilabial_gap_over_peer'])}, "
                   f"separation x{_fmt(d['ratio_separation_over_peer'])}."),
              ""]
    if d.get("streaming_by_voice") and engine != "espeak":  # espeak's 18 variants would make a long table
        lines += ["| voice | p, b, m | streaming: closed | opened |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {v} | {b['n_bilabials']} | {_fmt(b['closed_fraction'])} | {_fmt(b['opened_fraction'])} |"
                  for v, b in d["streaming_by_voice"].items()]
        lines.append("")
    plot = d.get("plot", PLOT_NAME[engine])  # runs before the key existed wrote the default
    if plot:
        whose = {"festival": "a voice the model trained on", "grid": "real speech"}.get(engine, "a held-out voice")
        lines.append(f"![inner-lip gap on {whose}](../docs/images/{plot})")
    else:
        lines.append("(No picture is kept for this run.)")
    return lines


def _capacity_repeat(name: str, d: dict, path: Path) -> list[str]:
    """`kfusion bench capacity --at N --repeats K`: each trial, batched beside the unbatched peer."""
    lines = _head(name, d, path)
    b, u = d["batched"], d["unbatched"]
    lines += ["", (f"**{d['batched_passed']} of {b['repeats']}** trials of {d['streams']} streams passed batched, "
                   f"{d['peer_unbatched_passed']} of {u['repeats']} with batching off (peer, same run, trials "
                   f"alternating). A trial passes with server p99 <= {_fmt(d['settings']['server_p99_target_ms'])} ms "
                   "and no frame late, dropped or lost. Each client message held "
                   f"{d['settings'].get('chunk_ms', DEFAULT_CHUNK_MS)} ms of audio."),
              "", ("| trial | batched: ok, server p50 / p99 ms, late frames, server CPU ms per stream-s | "
                   "unbatched: ok, server p50 / p99 ms, late frames | speed probe us per row (batched) |"),
              "| ---: | --- | --- | ---: |"]
    for k, (tb, tu) in enumerate(zip(b["trials"], u["trials"], strict=True), 1):
        lines.append(f"| {k} | {'ok' if tb['ok'] else 'FAIL'}, {_fmt(tb['server_ms']['p50'])} / "
                     f"{_fmt(tb['server_ms']['p99'])}, {tb['late']}, {_fmt(tb['server_cpu_ms_per_stream_s'])} | "
                     f"{'ok' if tu['ok'] else 'FAIL'}, {_fmt(tu['server_ms']['p50'])} / {_fmt(tu['server_ms']['p99'])}, "
                     f"{tu['late']} | {_fmt(tb.get('speed_probe_us_per_row'))} |")
    return lines


def _providers(name: str, d: dict, path: Path) -> list[str]:
    """`kfusion bench providers`: CUDA against the one-thread CPU session, parity then cost per call by batch."""
    lines = _head(name, d, path)
    p, load = d["parity"], d["session_load_s"]
    lines += ["", (f"Parity on the demo speech ({p['frames']} frames): the CUDA session's landmarks differ from the CPU "
                   f"session's by at most {_fmt(p['max_abs_px'])} px (mean {_fmt(p['mean_abs_px'])} px) in the 256 px "
                   f"frame. Session load: CPU {_fmt(load['cpu'])} s, CUDA {_fmt(load['cuda'])} s. Peer: the CPU "
                   "provider (one thread), same process."),
              "", "| batch (rows) | CPU p50 / p99 / max ms | CUDA p50 / p99 / max ms | CUDA / CPU (p50) | CUDA us per row |",
              "| ---: | ---: | ---: | ---: | ---: |"]
    three = _p50_p99_max
    for b, row in d["cost_by_batch"].items():
        lines.append(f"| {b} | {three(row['cpu_ms'])} | {three(row['cuda_ms'])} | "
                     f"**{_fmt(row['ratio_cuda_over_cpu_p50'])}** | {_fmt(row['cuda_us_per_row_p50'])} |")
    return lines


def admission_table(d: dict) -> list[str]:
    """`kfusion bench admission`: one row per server, what was admitted and how the admitted streams fared."""
    lines = [("| server | offered | admitted | refused (1013) | admitted: server p50 / p99 / max ms | late frames "
             "| lost frames | within target | server CPU, mean share of a core over the run |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for side in ("limited", "unlimited"):
        r = d[side]
        srv = _p50_p99_max(r["server_ms"]) if r.get("server_ms") else "n/a"
        lines.append(f"| `--max-load {_fmt(r['max_load'])}` | {r['offered']} | {r['admitted']} | {r['refused_1013']} | "
                     f"{srv} | {_fmt(r.get('late'))} of {_fmt(r.get('frames'))} | {_fmt(r.get('lost'))} | "
                     f"{_fmt(r['admitted_within_target'])} | {_fmt(r['server_cpu_share'])} |")
    return lines


def _admission(name: str, d: dict, path: Path) -> list[str]:
    lines = _head(name, d, path)
    lines += ["", ("Peer: the same arrivals on a server with no limit, in the same run. Ratio of the admitted streams' "
              f"server p99, limited / unlimited: **{_fmt(d['ratio_server_p99_limited_vs_unlimited'])}**."), ""]
    return lines + admission_table(d)


RENDERERS = {"latency": _latency, "admission": _admission, "providers": _providers, "scaleout": _scaleout, "quality": _quality,
             "articulation": _articulation, "capacity-at": _capacity_repeat}


def renderer(kind: str):
    """The renderer whose key is the longest that `kind` is, or starts with plus '-' (articulation-flite-vt as
    articulation); _generic when none is."""
    keys = [k for k in RENDERERS if kind == k or kind.startswith(k + "-")]
    return RENDERERS[max(keys, key=len)] if keys else _generic


def plot_latency_cdf(d: dict, out: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in d.get("runs", []) if r.get("cdf", {}).get("server_ms")]
    if not runs:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, title in zip(axes, ("server_ms", "end_to_end_ms"),
                              ("server-side (chunk in -> frame out)", "end-to-end (client send -> frame received)")):
        for r in runs:
            q = [p / 100.0 for p in r["cdf"]["quantiles_pct"]]
            ax.plot(r["cdf"][key], q, label=f"{r['streams']} streams")
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_title(title)
        ax.axhline(0.99, color="grey", lw=0.6, ls="--")
        ax.grid(True, which="both", lw=0.3)
    axes[0].set_ylabel("fraction of frames")
    axes[1].legend(loc="lower right")
    fig.suptitle(f"kfusion bench latency, {d.get('date_utc', '')}, {d['machine'].get('cpus')} vCPUs")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def plot_scaleout(d: dict, out: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    counts = d["settings"]["streams"]
    for lab, trials in d["trials"].items():
        ax.plot(counts, [trials[str(n)]["server_ms"]["p99"] for n in counts], marker="o", label=lab.replace("_", " "))
    ax.axhline(d["settings"]["server_p99_target_ms"], color="grey", ls="--", lw=0.8, label="target")
    ax.set_yscale("log")
    ax.set_xlabel("live streams")
    ax.set_ylabel("server p99 (ms, log scale)")
    ax.set_title(f"serve --workers, {d.get('date_utc', '')}")
    ax.legend()
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def capacity_setup(d: dict) -> str:
    """A `capacity --at` run's set-up in words, from its machine record."""
    m = d.get("machine", {})
    cpus = m.get("cpus")
    server, clients = (set(v) if isinstance(v, list) else None for v in (m.get("server_cpus"), m.get("client_cpus")))
    where = f"{cpus}-CPU machine"
    chunk_ms = d.get("settings", {}).get("chunk_ms", DEFAULT_CHUNK_MS)
    if chunk_ms != DEFAULT_CHUNK_MS:
        where += f", {chunk_ms} ms chunks"
    if server and clients and not server & clients:
        return f"{where}: server alone on {len(server)} CPU(s), clients on {len(clients)} others"
    if server and server == clients:
        return f"{where}: server and clients sharing {len(server)} CPUs"
    return f"{where}: server and clients sharing all its CPUs"


def plot_capacity_trials(runs: dict, out: Path) -> bool:
    """Every `capacity --at` trial: server p99 against streams, one colour per set-up, filled when it passed;
    the batching-off peers as grey crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours: dict[str, str] = {}
    peer_labelled = False
    for name in sorted(runs):
        d = runs[name]
        setup = capacity_setup(d)
        first_of_setup = setup not in colours
        c = colours.setdefault(setup, f"C{len(colours)}")
        for k, t in enumerate(d["batched"]["trials"]):
            x = d["streams"] + (k - 1) * 1.2  # side by side, not on top of each other
            ax.scatter(x, t["server_ms"]["p99"], s=36, color=c, facecolors=c if t["ok"] else "none",
                       label=setup if k == 0 and first_of_setup else None)
        for t in d["unbatched"]["trials"]:
            ax.scatter(d["streams"] + 4, t["server_ms"]["p99"], marker="x", s=20, color="0.6",
                       label=None if peer_labelled else "batching off (peer), same runs")
            peer_labelled = True
    ax.axhline(50, color="grey", ls="--", lw=0.8, label="target p99 50 ms")
    ax.set_yscale("log")
    ax.set_xlabel("live 30 fps streams in one server process")
    ax.set_ylabel("server p99 per 8 s trial (ms, log)")
    ax.set_title("Fixed-count capacity trials (filled: no frame late, dropped or lost)", fontsize=10)
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def replace_section(text: str, name: str, body: list[str]) -> str:
    """Put body between this benchmark's markers (appending the markers when absent); nothing else changes."""
    begin = f"<!-- bench-{name}:begin (written by `python -m benchmarks.report`; edits here are replaced) -->"
    end = f"<!-- bench-{name}:end -->"
    block = "\n".join([begin, *body, end])
    pattern = re.compile(rf"<!-- bench-{re.escape(name)}:begin[^\n]*-->.*?<!-- bench-{re.escape(name)}:end -->",
                         re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _m: block, text, count=1)
    return text.rstrip("\n") + "\n\n" + block + "\n"


def _order(names: list[str]) -> list[str]:
    from benchmarks.cli import BENCHMARKS

    return [n for n in BENCHMARKS if n in names] + sorted(n for n in names if n not in BENCHMARKS)


def build(results_dir: Path = RESULTS_DIR, out: Path = RESULTS_MD, images_dir: Path = IMAGES_DIR) -> list[str]:
    """Rewrite each benchmark's section of `out` (and its plots); the names of the sections written."""
    files = {p.stem: p for p in sorted(Path(results_dir).glob("*.json"))}
    if not files:
        raise ValueError(f"no benchmark results (*.json) in {results_dir}; run `kfusion bench all --json "
                         f"{results_dir}` first")
    text = out.read_text() if out.is_file() else "# Results\n"
    written = []
    for name in _order(list(files)):
        d = json.loads(files[name].read_text())
        if not isinstance(d, dict):
            raise ValueError(f"{files[name]}: expected a JSON object, got {type(d).__name__}")  # noqa: TRY004 (bad input file)
        kind = re.sub(r"\d+$", "", name.split("-run")[0])  # scaleout-run2 as scaleout, capacity-at128 as capacity-at
        body = renderer(kind)(name, d, files[name])
        if name == "latency":
            plot_latency_cdf(d, Path(images_dir) / CDF_PNG)
        if name == "scaleout":
            plot_scaleout(d, Path(images_dir) / SCALEOUT_PNG)
        text = replace_section(text, name, body)
        written.append(name)
    repeat_runs = {n: json.loads(files[n].read_text()) for n in files if n.startswith("capacity-at")}
    plot_capacity_trials(repeat_runs, Path(images_dir) / CAPACITY_PNG)
    out.write_text(text)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of <benchmark>.json files")
    p.add_argument("--out", type=Path, default=RESULTS_MD)
    p.add_argument("--images", type=Path, default=IMAGES_DIR)
    args = p.parse_args(argv)
    written = build(args.results, args.out, args.images)
    print(f"{args.out}: sections {', '.join(written)} regenerated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
