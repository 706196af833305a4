"""Reports for `kfusion eval`: bar and lip-gap plots, the RESULTS.md section, side-by-side mp4 videos."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

SECTION_BEGIN = "<!-- eval-quality:begin (written by `kfusion eval --split test`; edits here are replaced) -->"
SECTION_END = "<!-- eval-quality:end -->"
SECTION_TITLE = "## Quality on the pack's test split"
TRACE_MIN_FRAMES = 90  # the lip-gap plot shows a clip with at least 3 s in one segment (at 30 fps)
PANEL_PX = 384  # each side of the video is a 384 px square (the 256 px canonical frame scaled 1.5x)
# iBUG-68 polylines: (first, last, closed)
_GROUPS = ((0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False),
           (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True))


def write_plots(result: dict, traces: dict, per_clip: dict, images: Path) -> list[Path]:
    """docs/images/eval_quality.png (grouped bars) and eval_lip_gap.png (one clip's lip gap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images.mkdir(parents=True, exist_ok=True)
    models = result["models"]
    names = list(models)
    metrics = ("ld", "mouth_ld", "lvd", "mouth_lvd")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        vals = [100 * models[name][m] for m in metrics]
        axes[0].bar(np.arange(len(metrics)) + j * width, vals, width, label=name)
        r = models[name]["lip_gap_corr"]
        axes[1].bar(j, r if np.isfinite(r) else 0.0, color=f"C{j}")
        if not np.isfinite(r):
            axes[1].text(j, 0.01, "n/a\n(still)", ha="center", va="bottom", fontsize=7)
    axes[0].set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, ["LD", "mouth LD", "LVD", "mouth LVD"])
    axes[0].set_ylabel("% of inter-ocular distance (lower is better)")
    axes[0].legend(fontsize=8)
    axes[1].set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    axes[1].set_ylabel("lip-gap r at lag 0 (higher is better)")
    axes[1].axhline(0.5, color="k", lw=0.8, ls="--")
    fig.suptitle(f"{result['split']} split: {result['n_clips']} clips, {result['frames']} frames "
                 "(canonical frame, mean over clips)")
    fig.tight_layout()
    quality = images / "eval_quality.png"
    fig.savefig(quality, dpi=110)
    plt.close(fig)

    # the clip whose streaming lip-gap r is the median one: representative, not the best
    ref_model = "streaming" if "streaming" in names else names[0]
    def r0(c: str) -> float:
        curve = per_clip[c][ref_model]["lip_gap_curve"]
        return float(curve[len(curve) // 2])

    long_enough = [c for c in per_clip if len(traces[c]["truth"]) >= TRACE_MIN_FRAMES] or list(per_clip)
    ranked = sorted((c for c in long_enough if np.isfinite(r0(c))), key=r0)
    clip = ranked[len(ranked) // 2] if ranked else min(traces)
    gaps = traces[clip]
    fps = result["fps"]
    fig, ax = plt.subplots(figsize=(11, 3.6))
    t = np.arange(len(gaps["truth"])) / fps
    ax.plot(t, gaps["truth"], "k", lw=2, label="ground truth")
    for j, name in enumerate(names):
        if name in gaps and name not in ("static_face", "mean_face"):
            ax.plot(t, gaps[name], color=f"C{j}", lw=1.2, label=name)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("inner-lip gap (canonical px)")
    ax.set_title(f"{clip} ({result['clips'][clip]['source']}): the median clip (>= 3 s) by {ref_model} lip-gap r")
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    lip = images / "eval_lip_gap.png"
    fig.savefig(lip, dpi=110)
    plt.close(fig)
    return [quality, lip]


def section_text(result: dict, images: list[Path], results_path: Path, format_table) -> str:
    def rel(p: Path) -> str:  # image links are relative to the markdown file
        return os.path.relpath(Path(p).resolve(), results_path.resolve().parent)

    info = result["info"]
    lines = [SECTION_TITLE, "",
             (f"`kfusion eval --split test` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: "
             f"{result['n_clips']} test clips ({result['n_segments']} tracked segments), "
             f"{result['frames']} frames at {result['fps']} fps. Test speakers appear in no other split. "
              f"Clips without a face-tracked stretch of >= 1 s: {', '.join(result['dropped_clips']) or 'none'}."),
             ""]
    for name in ["streaming", "offline"] + sorted(k for k in info if k.startswith("streaming_la")):
        if name in info:
            lines.append(f"- `{name}`: {info[name].get('path')} (model_version {info[name].get('model_version')}, "
                         f"config_hash {info[name].get('config_hash')})")
    for name, why in info["skipped"].items():
        lines.append(f"- `{name}` not evaluated: {why}")
    lines += [
        ("- How it is scored: the truth is the pack's canonical track with its head motion applied (the "
        "frame the model outputs). Head pose is removed from prediction and truth alike "
        "(`engine.face.to_canonical` onto the pack's reference shape, fitted on nose and eyes), so guesses "
        "of head motion do not dominate mouth error. LD = per frame, mean point-to-point distance over the "
        "68 points (mouth: 48-67) divided by the truth's inter-ocular distance (points 36-45), averaged over "
        "frames; LVD = the same on frame-to-frame velocities (along time). Lip gap = mean of points "
        "61-63 vs 67-65; r is the Pearson correlation at lag 0 and the lag is where the clip-averaged "
        "lag curve (+-200 ms) peaks; + means the prediction is late. Each clip is averaged over its frames, "
        "then clips are averaged with equal weight. Tracked closures: places where the tracked inner-lip gap "
        "falls to 2 % of the eye distance or less for at most 8 frames (267 ms) with the lips open (>= 5 %) "
        "within 333 ms before and after, i.e. lips shut inside speech, mostly on p, b and m; a model shuts at "
        "one when its own gap reaches 2 % within a frame of it (`export.articulation.speech_closures`; pooled "
        "over clips)."),
        ("- Models get the clip's own mean canonical shape as identity and no emotion label; `streaming` "
        "runs the ONNX file over the whole clip in one call from the zero state (causal, so identical to "
        "live streaming), with the lip seal the model file asks for "
        f"({info.get('streaming', {}).get('lip_seal_pct', 0):g} % of the eye distance, `engine.face.seal_lips`, "
        "as the engine applies it; the offline checkpoint has none); `streaming_smoothed` is the same frames "
        "through the engine's causal One Euro "
        "filter (what `--smoothing` streams: it buffers nothing, but like any low-pass it lags fast motion a "
        "little). `static_face` holds that identity still; `mean_face` holds the model's mean face "
        "still; `loudness_regressor` is a linear map from causal log-RMS features (same lookahead as the "
        f"shipped model, {info.get('loudness_regressor', {}).get('lookahead_ms', 'n/a')} ms) to jaw and lip "
        "displacement, fitted on the train split only."), "",
        format_table(result["models"]), ""]
    if result.get("reference"):
        ref = result["reference"]
        lines += [f"Reference, not a model ({ref['note']}):", "", format_table(ref["models"]), ""]
    lines += ["By source (mouth LD % / mouth LVD % / lip-gap r):", ""]
    names = list(result["models"])
    lines.append("| source | clips | " + " | ".join(names) + " |")
    lines.append("| --- | ---: |" + " ---: |" * len(names))
    for src, models in result["by_source"].items():
        n = sum(1 for c in result["clips"].values() if c["source"] == src)
        cells = []
        for m in names:
            v = models.get(m)
            if v is None:
                cells.append("n/a")
                continue
            r = f"{v['lip_gap_corr']:.2f}" if np.isfinite(v["lip_gap_corr"]) else "n/a"
            cells.append(f"{100 * v['mouth_ld']:.2f} / {100 * v['mouth_lvd']:.2f} / {r}")
        lines.append(f"| {src} | {n} | " + " | ".join(cells) + " |")
    lines += lag_by_source_lines(result)
    if result.get("paired"):
        lines += ["", ("Streaming against each rival on the same clips (ratio of mean errors, < 1 is better; "
                  "95 % bootstrap interval over clips; share of clips where streaming is better):"), "",
                  "| rival | mouth LD ratio | mouth LVD ratio | clips better (mouth LD) |",
                  "| --- | ---: | ---: | ---: |"]
        for rival, cmp in result["paired"].items():
            ld, lvd = cmp["mouth_ld"], cmp["mouth_lvd"]
            lines.append(f"| {rival} | {ld['ratio']:.3f} ({ld['ci95'][0]:.3f}-{ld['ci95'][1]:.3f}) | "
                         f"{lvd['ratio']:.3f} ({lvd['ci95'][0]:.3f}-{lvd['ci95'][1]:.3f}) | "
                         f"{100 * ld['clips_better']:.0f}% |")
    lines += ["", "Targets:", ""]
    for c in result["targets"]:
        mark = "n/a" if c["pass"] is None else ("PASS" if c["pass"] else "FAIL")
        lines.append(f"- **{mark}** {c['check']}: {c['detail']}")
    lines.append("")
    if any(k.startswith("streaming_la") for k in info):
        lines += [("`streaming_la<N>ms` rows are the same recipe trained with another lookahead (issue 6), given "
                  "with `--lookahead-models`; their loudness baseline and targets still refer to the shipped model."),
                  ""]
    lines += [f"![{p.stem}]({rel(p)})" for p in images]
    return "\n".join(lines)


def lag_by_source_lines(result: dict) -> list[str]:
    """Markdown: per source, each moving model's lip-gap r at lag 0 and at the peak of its lag curve.

    A source where every model peaks at the same non-zero lag, while the others peak near 0, points at an
    audio/video offset in that source's clips rather than at the models (the metric still uses lag 0)."""
    names = [m for m, v in result["models"].items()  # the still faces have no lip-gap r
             if v.get("lip_gap_corr") is not None and np.isfinite(v["lip_gap_corr"])]
    if not names or not result.get("by_source"):
        return []
    lines = ["", ("Lip-gap r by source, at lag 0 and at the peak of the lag curve (r at 0 -> r at peak @ lag; "
             "+ means the prediction is late):"), "",
             "| source | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for src, models in result["by_source"].items():
        cells = []
        for m in names:
            v = models.get(m) or {}
            r0, peak, lag = v.get("lip_gap_corr"), v.get("lip_gap_corr_peak"), v.get("lip_gap_lag_ms")
            if r0 is None or peak is None or lag is None or not np.isfinite(r0):
                cells.append("n/a")
            else:
                cells.append(f"{r0:.2f} -> {peak:.2f} @ {lag:+.0f} ms")
        lines.append(f"| {src} | " + " | ".join(cells) + " |")
    return lines


def write_results_section(path: Path, result: dict, images: list[Path], format_table) -> None:
    """Replace only the text between the eval markers (append the section if it is not there yet)."""
    block = f"{SECTION_BEGIN}\n{section_text(result, images, path, format_table)}\n{SECTION_END}"
    text = path.read_text() if path.is_file() else "# Results\n"
    if SECTION_BEGIN in text and SECTION_END in text:
        head, rest = text.split(SECTION_BEGIN, 1)
        tail = rest.split(SECTION_END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def draw_panel(points: np.ndarray, title: str, colour: tuple[int, int, int]) -> np.ndarray:
    """One (PANEL_PX, PANEL_PX, 3) BGR image with the 68 points drawn as iBUG polylines."""
    import cv2

    img = np.full((PANEL_PX, PANEL_PX, 3), 255, np.uint8)
    pts = np.round(points * PANEL_PX / 256.0).astype(np.int32)
    for a, b, closed in _GROUPS:
        cv2.polylines(img, [pts[a:b + 1]], closed, colour, 2, cv2.LINE_AA)
    for p in pts:
        cv2.circle(img, tuple(int(v) for v in p), 2, (0, 0, 0), -1, cv2.LINE_AA)
    cv2.putText(img, title, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def render_videos(segments: list, preds: dict, out_dir: Path, n_videos: int, reference: np.ndarray) -> list[Path]:
    """mp4 (H.264 + AAC) of ground truth | prediction with the clip's sound, one clip per source first."""
    import soundfile as sf
    from tqdm import tqdm

    from engine.config import SAMPLE_RATE_HZ
    from export.evaluate import truth_track

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        print("ffmpeg not found: no videos rendered")
        return []
    model = "streaming" if "streaming" in preds else next(iter(preds))
    chosen, seen = [], set()
    for seg in sorted(segments, key=lambda s: s.clip_id):  # one per source, then the rest in order
        if seg.source not in seen:
            chosen.append(seg)
            seen.add(seg.source)
    chosen += [s for s in sorted(segments, key=lambda s: s.clip_id) if s not in chosen]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for seg in tqdm(chosen[:n_videos], desc="videos", unit="clip"):
        truth, pred = truth_track(seg), np.asarray(preds[model](seg), np.float64)
        out = out_dir / f"{seg.clip_id}_{model}.mp4"
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "audio.wav"
            sf.write(wav, seg.audio, SAMPLE_RATE_HZ)
            cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
                   "-s", f"{2 * PANEL_PX}x{PANEL_PX}", "-r", str(seg.fps), "-i", "-", "-i", str(wav),
                   "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out)]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
            for t in range(len(truth)):
                frame = np.concatenate([draw_panel(truth[t], f"ground truth {seg.clip_id}", (40, 140, 40)),
                                        draw_panel(pred[t], f"{model}", (180, 60, 30))], axis=1)
                proc.stdin.write(frame.tobytes())
            proc.stdin.close()
            if proc.wait() != 0:
                raise RuntimeError(f"ffmpeg failed writing {out}")
        written.append(out)
    print(f"wrote {len(written)} videos to {out_dir}")
    return written
