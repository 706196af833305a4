"""Check renders of synthetic clips: landmarks drawn over time into an mp4 with the sound (ffmpeg), and a
PNG strip of frames with phone labels. `render_clip(corpus_dir, record, mp4)`, `render_strip(...)`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from engine import face
from engine.config import CANONICAL_SIZE_PX

RENDER_SCALE = 2  # 256 px canonical frame -> 512 px video
# polylines of the iBUG-68 layout: (points, closed)
CONTOURS = ((face.JAW, False), (np.arange(17, 22), False), (np.arange(22, 27), False), (np.arange(27, 31), False),
            (np.arange(30, 36), False), (face.LEFT_EYE, True), (face.RIGHT_EYE, True), (face.OUTER_LIPS, True),
            (face.INNER_LIPS, True))


def draw_frame(points: np.ndarray, label: str = "", scale: int = RENDER_SCALE) -> Image.Image:
    """One (68, 2) canonical frame as an RGB image of (256 * scale) px."""
    size = CANONICAL_SIZE_PX * scale
    img = Image.new("RGB", (size, size), (18, 18, 24))
    d = ImageDraw.Draw(img)
    p = points * scale
    for idx, closed in CONTOURS:
        xy = [tuple(map(float, p[i])) for i in idx]
        if closed:
            xy.append(xy[0])
        colour = (250, 120, 120) if idx[0] >= 48 else (200, 210, 230)
        d.line(xy, fill=colour, width=max(1, scale))
    if label:
        d.text((8 * scale, 8 * scale), label, fill=(255, 255, 120))
    return img


def phone_at(phones: list[dict], t: float) -> str:
    for ph in phones:
        if ph["start_s"] <= t < ph["end_s"]:
            return ph["phone"]
    return ""


def render_clip(corpus: Path, record: dict, mp4: Path) -> Path:
    """Draw a clip's landmarks frame by frame with its phone labels and mux its wav into an mp4."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise FileNotFoundError("ffmpeg is not installed")
    lm = np.load(corpus / record["landmarks"])
    phones = json.loads((corpus / record["phones"]).read_text())
    fps = record["fps"]
    mp4.parent.mkdir(parents=True, exist_ok=True)
    size = CANONICAL_SIZE_PX * RENDER_SCALE
    cmd = [exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}",
           "-r", str(fps), "-i", "-", "-i", str(corpus / record["audio"]), "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-threads", "1", "-c:a", "aac", "-shortest", str(mp4)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    for i, pts in enumerate(lm):
        label = f"{record['emotion']}  {record['voice']}  /{phone_at(phones, i / fps)}/"
        proc.stdin.write(draw_frame(pts, label).tobytes())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed writing {mp4}")
    return mp4


def render_strip(corpus: Path, record: dict, png: Path, n_panels: int = 10, phones_wanted: tuple = ()) -> Path:
    """A row of mouth close-ups at the middle of selected phones (default: evenly spaced), labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lm = np.load(corpus / record["landmarks"])
    phones = [p for p in json.loads((corpus / record["phones"]).read_text()) if p["phone"] != "pau"]
    chosen = [p for p in phones if p["phone"] in phones_wanted] if phones_wanted else phones
    idx = np.linspace(0, len(chosen) - 1, min(n_panels, len(chosen))).round().astype(int)
    chosen = [chosen[i] for i in idx]
    fig = plt.figure(figsize=(1.2 * len(chosen), 3.6))
    grid = fig.add_gridspec(2, len(chosen), height_ratios=(1.3, 1.0))
    axes = [fig.add_subplot(grid[0, k]) for k in range(len(chosen))]
    for ax, ph in zip(axes, chosen):
        i = min(round(0.5 * (ph["start_s"] + ph["end_s"]) * record["fps"]), len(lm) - 1)
        pts = lm[i]
        for seg, closed in CONTOURS:
            xy = pts[np.append(seg, seg[0]) if closed else seg]
            ax.plot(xy[:, 0], xy[:, 1], color="crimson" if seg[0] >= 48 else "0.4", lw=1)
        c = pts[face.MOUTH].mean(0)
        ax.set_xlim(c[0] - 45, c[0] + 45)
        ax.set_ylim(c[1] + 55, c[1] - 35)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"/{ph['phone']}/ {i / record['fps']:.2f}s", fontsize=8)
    # below: inner-lip gap over time with the phones, the acoustic segmentation the lips must follow
    ax = fig.add_subplot(grid[1, :])
    t = np.arange(len(lm)) / record["fps"]
    ax.plot(t, face.inner_lip_gap(lm), color="crimson", lw=1.5)
    for ph in json.loads((corpus / record["phones"]).read_text()):
        ax.axvline(ph["start_s"], color="0.85", lw=0.8)
        colour = "tab:blue" if ph["phone"] in ("p", "b", "m") else "0.2"
        ax.text(0.5 * (ph["start_s"] + ph["end_s"]), ax.get_ylim()[1] * 0.92, ph["phone"], ha="center",
                fontsize=7, color=colour)
    ax.set_xlim(0, t[-1])
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_ylabel("inner-lip gap (px)", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.suptitle(f"\"{record['text']}\" ({record['voice']}, {record['emotion']})", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return png
