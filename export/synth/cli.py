"""`kfusion synth`: a phoneme-timed synthetic speech + landmark corpus in the pack's on-disk format.

Usage: kfusion synth --minutes 90 --out /work/cache/synth --seed 1 --jobs 2 [--render 4] [--engine espeak]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from engine.config import CANONICAL_SIZE_PX, DEFAULT_FPS, LANDMARK_LAYOUT, SAMPLE_RATE_HZ

log = logging.getLogger("kfusion.synth")

PACK_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "talking-faces"
VAL_FRACTION = 0.05
MANIFEST_UNITS = ("canonical 256x256 face frame px (engine/face.py), x right, y down, head motion applied; "
                  "frame i at time i/fps")
EMOTION_WEIGHTS = {"neutral": 0.4, "happy": 0.15, "sad": 0.15, "angry": 0.15, "surprised": 0.15}
# emotion -> (duration stretch factor, pitch shift semitones, F0 range factor, gain dB, articulation)
PROSODY = {"neutral": (1.0, 0.0, 1.0, 0.0, 1.0), "happy": (0.93, 2.5, 1.5, 2.0, 1.05),
           "sad": (1.18, -2.0, 0.6, -5.0, 0.8), "angry": (0.9, 1.0, 1.4, 4.0, 1.15),
           "surprised": (0.97, 4.0, 1.8, 2.0, 1.1)}
EMOTIONS_ORDER = tuple(EMOTION_WEIGHTS)
ENGINES = ("festival", "espeak", "flite", "intl", "intl-native", "both")
# clip ids: PREFIX<seed>_<index>
ID_PREFIX = {"festival": "synth", "espeak": "espeak", "flite": "flite", "intl": "intl", "intl-native": "intln"}
FESTIVAL_ENGINES = ("festival", "intl", "intl-native")  # the engines that speak through festival
TARGET_RMS_DBFS = -22.0
PEAK_LIMIT = 0.97


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, required=True, help="corpus length to generate (minutes of audio)")
    p.add_argument("--out", type=Path, required=True, help="output folder (manifest.json, wav, lm68.npy, phones)")
    p.add_argument("--seed", type=int, default=0, help="same seed and minutes -> identical files")
    p.add_argument("--jobs", type=int, default=2, help="parallel festival/face workers")
    p.add_argument("--chunk", type=int, default=16, help="utterances per festival process")
    p.add_argument("--pack", type=Path, default=PACK_DIR, help="talking-face pack whose train split is fitted")
    p.add_argument("--face-model", type=Path, default=None,
                   help="fitted face model cache (.npz); default OUT/face_model.npz")
    p.add_argument("--render", type=int, default=0, help="also render this many clips to OUT/renders/*.mp4")
    p.add_argument("--engine", choices=ENGINES, default="festival",
                   help="TTS: festival (its English voices), espeak (libespeak-ng), flite (its training voices, "
                        "export.synth.flite.TRAIN_VOICES), intl (festival's Italian, Czech and Finnish training "
                        "voices reading the English text, export.synth.festival.INTL_TRAIN_VOICES), intl-native "
                        "(the same voices reading sentences in their own languages, export/synth/text_intl.py) or "
                        "both (festival and espeak, alternating utterances)")


def _engine_of(engine: str, index: int) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    return ("festival", "espeak")[index % 2] if engine == "both" else engine


def _voices(engine: str) -> tuple[str, ...]:
    from export.synth import espeak, festival, flite

    return {"festival": festival.ENGLISH_VOICES, "espeak": espeak.VOICES, "flite": flite.TRAIN_VOICES,
            "intl": festival.INTL_TRAIN_VOICES, "intl-native": festival.INTL_TRAIN_VOICES,
            "both": festival.ENGLISH_VOICES + espeak.VOICES}[engine]


def utterance_spec(seed: int, index: int, n_identities: int, engine: str = "festival") -> dict:
    """Everything random about utterance `index`, drawn from its own seeded stream."""
    from export.synth.festival import INTL_VOICES
    from export.synth.text import sentence
    from export.synth.text_intl import sentence_in

    engine = _engine_of(engine, index)
    voices = _voices(engine)
    rng = np.random.default_rng([seed, index])
    emotion = str(rng.choice(list(EMOTIONS_ORDER), p=[EMOTION_WEIGHTS[e] for e in EMOTIONS_ORDER]))
    stretch, semis, f0_range, gain_db, artic = PROSODY[emotion]
    split = "val" if rng.random() < VAL_FRACTION else "train"
    voice = voices[int(rng.integers(len(voices)))]
    intensity = round(float(rng.uniform(0.5, 1.0)) if emotion != "neutral" else 0.0, 3)
    return {
        "id": f"{ID_PREFIX[engine]}{seed}_{index:06d}",
        "engine": engine,
        "split": split,
        "voice": voice,
        "emotion": emotion,
        "emotion_intensity": intensity,
        "text": sentence_in(rng, INTL_VOICES[voice]) if engine == "intl-native" else sentence(rng, emotion),
        "duration_stretch": round(float(np.clip(stretch * rng.uniform(0.85, 1.2), 0.6, 1.8)), 3),
        "pitch_semitones": round(semis + float(rng.normal(0.0, 1.5)), 2),
        "f0_range": round(f0_range * float(rng.uniform(0.8, 1.25)), 3),
        "gain_db": round(gain_db + float(rng.normal(0.0, 1.5)), 2),
        "articulation": round(artic * float(rng.uniform(0.85, 1.15)), 3),
        "identity": int(rng.integers(n_identities)),
        "head_amount": round(float(rng.uniform(0.4, 1.0)), 3),
        "face_seed": int(rng.integers(2**31)),
    }


def landmarks_for(model, spec: dict, phones: list, n_frames: int) -> np.ndarray:
    """(n_frames, 68, 2) float32 landmark track for one utterance."""
    from export.synth.face_model import EXPRESSION_PARAM_BIAS, expression_offsets
    from export.synth.visemes import mouth_params, to_features

    rng = np.random.default_rng(spec["face_seed"])
    intensity = spec["emotion_intensity"]
    bias = np.asarray(EXPRESSION_PARAM_BIAS[spec["emotion"]], float) * intensity
    feats = to_features(mouth_params(phones, n_frames), model.feature_scale, spec["articulation"], bias)
    blink = model.blink_track(rng, n_frames)
    head = model.head_track(rng, n_frames, spec["head_amount"])
    shapes = model.compose(spec["identity"], feats, blink, expression_offsets(spec["emotion"], intensity), head)
    return shapes.astype(np.float32)


def _write_audio(path: Path, y: np.ndarray, gain_db: float) -> np.ndarray:
    import soundfile as sf

    rms = float(np.sqrt(np.mean(y**2))) + 1e-9
    y = y * (10 ** ((TARGET_RMS_DBFS + gain_db) / 20.0) / rms)
    peak = float(np.abs(y).max())
    if peak > PEAK_LIMIT:
        y = y * (PEAK_LIMIT / peak)
    sf.write(path, y, SAMPLE_RATE_HZ, subtype="PCM_16")
    return y


def make_chunk(out: str, seed: int, first: int, count: int, model_path: str, engine: str = "festival") -> list[dict]:
    """Worker: synthesise utterances first..first+count-1 and write their files; returns their records."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from engine.timing import n_frames as frames_in
    from export.synth import espeak, festival, flite
    from export.synth.face_model import FaceModel

    model = FaceModel.load(Path(model_path))
    out_dir = Path(out)
    specs = [utterance_spec(seed, i, len(model.identities), engine) for i in range(first, first + count)]
    tts = {name: [s for s in specs if s["engine"] == name] for name in ID_PREFIX}
    by_id = {}
    for name in FESTIVAL_ENGINES:
        if tts[name]:
            reqs = [festival.TtsRequest.from_spec(s) for s in tts[name]]
            with tempfile.TemporaryDirectory(prefix="kfusion-synth-") as tmp:
                by_id.update(zip([s["id"] for s in tts[name]], festival.synthesize(reqs, Path(tmp))))
    if tts["espeak"]:
        reqs = [espeak.EspeakRequest.from_spec(s) for s in tts["espeak"]]
        by_id.update(zip([s["id"] for s in tts["espeak"]], espeak.synthesize(reqs)))
    if tts["flite"]:
        reqs = [flite.FliteRequest.from_spec(s) for s in tts["flite"]]
        by_id.update(zip([s["id"] for s in tts["flite"]], flite.synthesize(reqs)))
    results = [by_id[s["id"]] for s in specs]
    records = []
    for spec, (audio, phones) in zip(specs, results):
        cid = spec["id"]
        audio = _write_audio(out_dir / f"{cid}.wav", audio, spec["gain_db"])
        n = frames_in(len(audio), DEFAULT_FPS)
        end_s = len(audio) / SAMPLE_RATE_HZ
        phones = [(p, round(s, 4), round(min(e, end_s), 4)) for p, s, e in phones if s < end_s]
        lm = landmarks_for(model, spec, phones, n)
        np.save(out_dir / f"{cid}.lm68.npy", lm)
        (out_dir / f"{cid}.phones.json").write_text(json.dumps(
            [{"phone": p, "start_s": s, "end_s": e} for p, s, e in phones]))
        records.append({
            "id": cid, "split": spec["split"], "audio": f"{cid}.wav", "landmarks": f"{cid}.lm68.npy",
            "phones": f"{cid}.phones.json", "fps": DEFAULT_FPS, "frames": n, "frames_with_face": n,
            "duration_s": round(end_s, 4), "width": CANONICAL_SIZE_PX, "height": CANONICAL_SIZE_PX,
            "source_dataset": "synth", "voice": spec["voice"], "emotion": spec["emotion"],
            "emotion_intensity": spec["emotion_intensity"], "text": spec["text"],
            "identity": model.identity_ids[spec["identity"]], "duration_stretch": spec["duration_stretch"],
            "pitch_semitones": spec["pitch_semitones"],
        })
        if spec["engine"] != "festival":
            records[-1]["tts_engine"] = spec["engine"]
    return records


def _write_manifest(out: Path, records: list[dict], info: dict) -> None:
    from export.synth.face_model import EMOTIONS

    manifest = {"layout": LANDMARK_LAYOUT, "units": MANIFEST_UNITS, "audio": "16 kHz mono PCM16 WAV",
                "emotions": list(EMOTIONS), "voices": list(_voices(info.get("engine", "festival"))), "synth": info,
                "clips": records}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out / "manifest.json")


def _chunk_files_exist(out: Path, recs: list[dict]) -> bool:
    return all((out / r[k]).is_file() for r in recs for k in ("audio", "landmarks", "phones"))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from export.synth.face_model import FaceModel

    if args.minutes <= 0 or args.jobs < 1 or args.chunk < 1:
        raise ValueError(f"need --minutes > 0, --jobs >= 1, --chunk >= 1; got {args.minutes}, {args.jobs}, {args.chunk}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = Path(args.face_model) if args.face_model else out / "face_model.npz"
    FaceModel.load_or_fit(Path(args.pack), model_path)
    target_s = 60.0 * args.minutes
    engine = getattr(args, "engine", "festival")
    info = {"seed": args.seed, "chunk": args.chunk, "minutes_requested": args.minutes}
    if engine != "festival":  # festival-only manifests stay exactly as before
        info["engine"] = engine
    # resume: reuse whole chunks a previous run with the same seed and chunk size finished
    done: dict[int, list[dict]] = {}
    reused: set[int] = set()
    old = out / "manifest.json"
    if old.is_file():
        prev = json.loads(old.read_text())
        ps = prev.get("synth", {})
        if ps.get("seed") == args.seed and ps.get("chunk") == args.chunk and ps.get("engine", "festival") == engine:
            by_chunk: dict[int, list[dict]] = {}
            for r in prev["clips"]:
                by_chunk.setdefault(int(r["id"].rsplit("_", 1)[1]) // args.chunk, []).append(r)
            done = {k: v for k, v in by_chunk.items() if len(v) == args.chunk and _chunk_files_exist(out, v)}
            log.info("resuming: %d finished chunks found in %s", len(done), old)
    reused = set(done)

    def prefix() -> tuple[list[dict], float, int]:
        """Records of the contiguous finished chunks 0..k-1 up to the target length, their seconds and k."""
        recs, total, k = [], 0.0, 0
        while k in done and total < target_s:
            recs += done[k]
            total += sum(r["duration_s"] for r in done[k])
            k += 1
        return recs, total, k

    def children_cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # workers and festival, once they have ended
        return usage.ru_utime + usage.ru_stime

    cpu0 = time.process_time() - children_cpu_s()
    t0 = time.time()
    bar = tqdm(total=round(args.minutes, 1), unit="min", desc="synth")
    pending: dict = {}
    next_chunk = 0
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        while True:
            recs, total, k = prefix()
            bar.n = round(min(total, target_s) / 60.0, 1)
            bar.refresh()
            if total >= target_s:
                break
            # keep the workers busy, but never launch more than the remaining length plausibly needs
            avg = total / max(len(recs), 1) if recs else 3.0
            in_flight_s = avg * args.chunk * len(pending)
            while len(pending) < args.jobs and total + in_flight_s < target_s * 1.02 + avg * args.chunk:
                while next_chunk in done or next_chunk in pending.values():
                    next_chunk += 1
                fut = pool.submit(make_chunk, str(out), args.seed, next_chunk * args.chunk, args.chunk, str(model_path),
                                  engine)
                pending[fut] = next_chunk
                in_flight_s += avg * args.chunk
            if not pending:
                break
            fut = next(iter(_wait_first(pending)))
            done[pending.pop(fut)] = fut.result()
            recs, total, k = prefix()
            _write_manifest(out, recs, {**info, "minutes": round(total / 60.0, 3), "complete": total >= target_s})
        for fut, chunk in pending.items():  # started before the target was reached: finish, then drop below
            if not fut.cancel():
                done[chunk] = fut.result()
    bar.close()
    recs, total, k = prefix()
    for extra in sorted(c for c in done if c >= k):  # chunks past the target: not part of this corpus
        for r in done[extra]:
            for key in ("audio", "landmarks", "phones"):
                (out / r[key]).unlink(missing_ok=True)
    cpu_min = (time.process_time() + children_cpu_s() - cpu0) / 60.0
    info.update(minutes=round(total / 60.0, 3), complete=True, clips=len(recs))
    _write_manifest(out, recs, info)
    new_min = sum(sum(r["duration_s"] for r in done[c]) for c in done if c < k and c not in reused) / 60.0
    stats = {"new_minutes": round(new_min, 3), "wall_min": round((time.time() - t0) / 60.0, 3),
             "cpu_min": round(cpu_min, 3), "corpus_min_per_cpu_min": round(new_min / max(cpu_min, 1e-6), 2)}
    (out / "synth_run.json").write_text(json.dumps(stats, indent=1))  # timings stay out of the manifest
    log.info("synth: %d clips, %.1f min of speech in %s; this run made %.1f min in %.2f min wall and %.2f CPU min "
             "(%.1f corpus min per CPU min)", len(recs), total / 60.0, out, new_min, stats["wall_min"], cpu_min,
             stats["corpus_min_per_cpu_min"])
    if args.render:
        from export.synth.render import render_clip

        for r in recs[: args.render]:
            render_clip(out, r, out / "renders" / f"{r['id']}.mp4")
    return 0


def _wait_first(pending: dict):
    from concurrent.futures import FIRST_COMPLETED, wait

    finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
    return finished


if __name__ == "__main__":  # python -m export.synth.cli ... (same as `kfusion synth ...`)
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _parser = argparse.ArgumentParser(prog="kfusion synth", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
