"""Phone times for real speech whose words are known: a synthesiser says the same words, and dynamic time
warping (librosa) over log-mel frames carries its phone times onto the recording.

    phones = align_phones(real_audio, [(synth_audio, synth_phones), ...])   # [(phone, start_s, end_s)]

Several renditions (e.g. festival's three English voices) each give a warp; a phone's times are their
median over the renditions that spell the words with the same phones as the first.

Chosen on synthetic speech whose phone times are known (festival's diphone voices warped onto its HTS voice
and back, 12 of the benchmark's sentences, 32 pairs, the target given 0.3-1 s of room noise before it): 40
log-mel bands and their deltas, each normalised over the utterance, cosine distance, only the speech warped.
Phone starts landed a median 10 ms from the truth, 98 % within 50 ms; 19 MFCCs with a Euclidean distance did
worse (a median 23 ms, 74 % within 50 ms). On real recordings a lead-in of breath and lip noise pulled phones
into it until only the speech was warped (SPEECH_OVER_FLOOR_DB).
"""

from __future__ import annotations

import numpy as np

from engine.config import SAMPLE_RATE_HZ

HOP_S = 0.01  # one frame per 10 ms
WINDOW_S = 0.025
N_MELS = 40
LOG_FLOOR = 1e-6  # added to the mel power before the log
HOP_SAMPLES = round(HOP_S * SAMPLE_RATE_HZ)
WINDOW_SAMPLES = round(WINDOW_S * SAMPLE_RATE_HZ)
if HOP_SAMPLES != HOP_S * SAMPLE_RATE_HZ:
    raise ValueError(f"HOP_S {HOP_S} s is not a whole number of samples at {SAMPLE_RATE_HZ} Hz")
MIN_AUDIO_S = 0.2
# Only the speech is warped, with a margin: a recording's lead-in (noise, breath, a lip smack) has nothing to
# match in a synthesiser's digital silence. The recording's speech is where its 10 ms RMS rises 15 dB over its
# 10th-percentile frame (its noise floor); the synthesiser's is its first to last phone that is not a pause.
FLOOR_PERCENTILE = 10
SPEECH_OVER_FLOOR_DB = 15.0
MARGIN_S = 0.15
PAUSES = ("pau", "sil", "h#", "#")


def alignment_features(audio: np.ndarray) -> np.ndarray:
    """(N,) 16 kHz audio -> (2 * N_MELS, T) log-mel bands and their deltas, each row normalised over the utterance."""
    import librosa

    y = np.asarray(audio, np.float32)
    if y.ndim != 1 or len(y) < MIN_AUDIO_S * SAMPLE_RATE_HZ:
        raise ValueError(f"audio must be 1-D 16 kHz samples, at least {MIN_AUDIO_S} s, got shape {y.shape}")
    m = np.log(librosa.feature.melspectrogram(y=y, sr=SAMPLE_RATE_HZ, n_fft=WINDOW_SAMPLES, hop_length=HOP_SAMPLES,
                                              n_mels=N_MELS) + LOG_FLOOR)
    f = np.vstack([m, librosa.feature.delta(m)])
    return (f - f.mean(axis=1, keepdims=True)) / (f.std(axis=1, keepdims=True) + 1e-8)


def speech_span(audio: np.ndarray) -> tuple[float, float]:
    """(start_s, end_s) of the speech in a recording: its frames SPEECH_OVER_FLOOR_DB over its noise floor."""
    import librosa

    rms = librosa.feature.rms(y=np.asarray(audio, np.float32), frame_length=WINDOW_SAMPLES, hop_length=HOP_SAMPLES)[0]
    db = 20.0 * np.log10(rms + 1e-9)
    loud = np.flatnonzero(db > np.percentile(db, FLOOR_PERCENTILE) + SPEECH_OVER_FLOOR_DB)
    if not loud.size:
        raise ValueError(f"no speech found: no frame is {SPEECH_OVER_FLOOR_DB} dB over the recording's noise floor")
    return float(loud[0] * HOP_S), float((loud[-1] + 1) * HOP_S)


def _cut(audio: np.ndarray, start_s: float, end_s: float) -> tuple[np.ndarray, float]:
    a = max(0, int((start_s - MARGIN_S) * SAMPLE_RATE_HZ))
    b = min(len(audio), int((end_s + MARGIN_S) * SAMPLE_RATE_HZ))
    return np.asarray(audio[a:b], np.float32), a / SAMPLE_RATE_HZ


def spoken_span(phones: list[tuple[str, float, float]]) -> tuple[float, float]:
    """(start_s, end_s) from a rendition's first to its last phone that is not a pause."""
    spoken = [(s, e) for p, s, e in phones if p not in PAUSES]
    if not spoken:
        raise ValueError("the synthetic rendition holds only pauses")
    return spoken[0][0], spoken[-1][1]


def time_warp(real_features: np.ndarray, real_t0: float, synth: np.ndarray,
              synth_phones: list[tuple[str, float, float]]):
    """A function taking times (s) in `synth` to times in the recording, from the DTW path between the log-mels of
    their speech (each with MARGIN_S around it). `real_features`: alignment_features of the recording's speech
    cut, which starts at real_t0 s."""
    import librosa

    synth, synth_t0 = _cut(synth, *spoken_span(synth_phones))
    x, y = alignment_features(synth), real_features
    _, path = librosa.sequence.dtw(X=x, Y=y, metric="cosine")
    sums = np.zeros(x.shape[1])
    counts = np.zeros(x.shape[1])
    np.add.at(sums, path[:, 0], path[:, 1])
    np.add.at(counts, path[:, 0], 1)
    real_frame = sums / counts  # each synth frame -> the mean real frame the path pairs it with
    frames = np.arange(x.shape[1])

    def warp(t_s: float) -> float:  # outside the cut (pauses only), times keep their distance from its edge
        f = (t_s - synth_t0) / HOP_S
        edge = min(max(f, 0.0), frames[-1])
        return real_t0 + (float(np.interp(edge, frames, real_frame)) + f - edge) * HOP_S

    return warp


def align_phones(real: np.ndarray, renditions: list[tuple[np.ndarray, list[tuple[str, float, float]]]]
                 ) -> list[tuple[str, float, float]]:
    """The first rendition's phones, timed on `real`: each start and end is the median over the renditions
    whose phone sequence matches the first's (the first always counts)."""
    if not renditions:
        raise ValueError("align_phones needs at least one (audio, phones) rendition of the words")
    sequence = [p for p, _, _ in renditions[0][1]]
    spoken_span(renditions[0][1])  # words to warp, before the recording is read (the others spell the same)
    speech, real_t0 = _cut(real, *speech_span(real))
    real_features = alignment_features(speech)  # once, for every rendition
    timed = []
    for audio, phones in renditions:
        if [p for p, _, _ in phones] != sequence:
            continue
        warp = time_warp(real_features, real_t0, audio, phones)
        timed.append([(warp(s), warp(e)) for _, s, e in phones])
    t = np.median(np.asarray(timed, np.float64), axis=0)  # (n_renditions, n_phones, 2) -> (n_phones, 2)
    t = np.clip(t, 0.0, len(real) / SAMPLE_RATE_HZ)  # a pause may reach past the recording's ends
    return [(p, float(s), float(max(e, s))) for p, (s, e) in zip(sequence, t)]
