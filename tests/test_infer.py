"""`kfusion infer`: the npz contract (shape, dtype, fps, T) for files of any rate and channel count."""

from __future__ import annotations

import numpy as np
import pytest

from engine import timing
from engine.cli import main


@pytest.fixture(scope="module")
def model_ready():
    from engine.session import default_model_path

    if not default_model_path().is_file():
        pytest.skip(f"no model at {default_model_path()}")


def test_infer_writes_the_npz_contract(model_ready, speech_wav, tmp_path):
    import soundfile as sf
    import soxr

    y, sr = sf.read(speech_wav, dtype="float32")
    stereo44 = tmp_path / "stereo44.flac"
    sf.write(stereo44, np.stack([soxr.resample(y, sr, 44100)] * 2, axis=1), 44100)
    out = tmp_path / "out"
    assert main(["infer", str(speech_wav), str(stereo44), "--out", str(out)]) == 0
    for path, rate, n in ((speech_wav, sr, len(y)), (stereo44, 44100, len(soxr.resample(y, sr, 44100)))):
        with np.load(out / f"{path.stem}.npz") as z:
            lm, fps = z["landmarks"], int(z["fps"])
        assert fps == 30
        assert lm.dtype == np.float32 and lm.ndim == 3 and lm.shape[1:] == (68, 2)
        assert lm.shape[0] == timing.n_frames(round(n * 16000 / rate), 30)
        assert np.isfinite(lm).all() and (lm > -256).all() and (lm < 512).all()
    a = np.load(out / f"{speech_wav.stem}.npz")["landmarks"]
    b = np.load(out / "stereo44.npz")["landmarks"]
    assert abs(len(a) - len(b)) <= 1  # the same speech through two resamplers


def test_infer_other_fps_controls_and_identity(model_ready, speech_wav, tmp_path):
    from engine.session import ModelSession

    ident = ModelSession(providers="cpu").meta.mean_face + 3.0
    np.save(tmp_path / "face.npy", ident)
    out = tmp_path / "o"
    assert main(["infer", str(speech_wav), "--out", str(out), "--fps", "60", "--controls", "--smoothing",
                 "--identity", str(tmp_path / "face.npy"), "--emotion", "happy"]) == 0
    with np.load(out / f"{speech_wav.stem}.npz") as z:
        assert int(z["fps"]) == 60
        assert z["controls"].shape == (len(z["landmarks"]), 9)
        assert next(iter(z["control_names"])) == "jawOpen"


def test_infer_bad_input_is_a_clear_error(model_ready, tmp_path, capsys):
    assert main(["infer", str(tmp_path / "missing.wav"), "--out", str(tmp_path)]) == 2
    assert "audio file not found" in capsys.readouterr().err
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 10)
    assert main(["infer", str(junk), "--out", str(tmp_path)]) == 2
    assert "cannot decode audio" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 2)))
    assert main(["infer", str(junk), "--out", str(tmp_path), "--identity", str(bad)]) == 2
    assert "(68, 2)" in capsys.readouterr().err
