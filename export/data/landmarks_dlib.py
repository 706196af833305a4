"""68-point landmark tracks from video with dlib, the way the talking-face pack made its .lm68.npy files.

Needs `pip install dlib-bin` (prebuilt dlib wheel) and `apt-get install libdlib-data` (the
68-point model at /usr/share/dlib/shape_predictor_68_face_landmarks.dat); frames are decoded by OpenCV.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.config import N_LANDMARKS

DEFAULT_PREDICTOR = Path(os.environ.get("KFUSION_DLIB_PREDICTOR")
                         or "/usr/share/dlib/shape_predictor_68_face_landmarks.dat")
REDETECT_EVERY_FRAMES = 10  # the HOG detector re-runs on every 10th frame and whenever the face was lost
DETECT_UPSAMPLE = 0  # dlib detector upsampling: 0 as the pack (faces >= ~80 px); 1 finds ~40 px faces
INSTALL_DLIB = "pip install dlib-bin   (the prebuilt dlib wheel; or: pip install -e '.[prepare]')"
INSTALL_MODEL = "apt-get install libdlib-data   (gives /usr/share/dlib/shape_predictor_68_face_landmarks.dat)"
INSTALL_OPENCV = "pip install opencv-python-headless   (or: pip install -e '.[prepare]')"


class VideoError(ValueError):
    """A video that cannot be used (unreadable, no frames)."""


def missing_requirements(predictor: str | Path = DEFAULT_PREDICTOR) -> list[str]:
    """What is missing to track landmarks, each with how to install it; empty when all is there."""
    problems = []
    try:
        import dlib  # noqa: F401
    except ImportError as exc:
        problems.append(f"dlib is not importable ({exc}): {INSTALL_DLIB}")
    try:
        import cv2  # noqa: F401
    except ImportError as exc:
        problems.append(f"OpenCV is not importable ({exc}): {INSTALL_OPENCV}")
    if not Path(predictor).is_file():
        problems.append(f"dlib's 68-point model is not at {predictor}: {INSTALL_MODEL}, "
                        "or pass its path with --predictor")
    return problems


class LandmarkTracker:
    """dlib HOG frontal detector + 68-point shape predictor; one instance per process."""

    def __init__(self, predictor: str | Path = DEFAULT_PREDICTOR, redetect_every: int = REDETECT_EVERY_FRAMES,
                 upsample: int = DETECT_UPSAMPLE) -> None:
        problems = missing_requirements(predictor)
        if problems:
            raise FileNotFoundError("; ".join(problems))
        if redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1 frame, got {redetect_every}")
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(predictor))
        self.redetect_every = redetect_every
        self.upsample = upsample
        self.settings = (str(predictor), redetect_every, upsample)

    def _detect(self, gray: np.ndarray):
        rects = self.detector(gray, self.upsample)
        if len(rects) == 0:
            return None
        return max(rects, key=lambda r: r.width() * r.height())  # the largest face is the speaker

    def track(self, video: str | Path, progress=None) -> tuple[np.ndarray, float, int, int]:
        """(landmarks (T, 68, 2) float32 px with NaN rows where no face, fps, width, height) of a video."""
        import cv2

        cap = cv2.VideoCapture(str(video))
        if not cap.isOpened():
            raise VideoError(f"OpenCV cannot open the video {video}")
        try:
            fps = float(cap.get(cv2.CAP_PROP_FPS))
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            rows: list[np.ndarray] = []
            rect = None
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)  # as the pack: grey 8-bit frames
                if rect is None or len(rows) % self.redetect_every == 0:
                    rect = self._detect(gray)
                if rect is None:
                    rows.append(np.full((N_LANDMARKS, 2), np.nan, np.float32))
                else:
                    shape = self.predictor(gray, rect)
                    rows.append(np.array([(p.x, p.y) for p in shape.parts()], np.float32))
                if progress is not None:
                    progress(1)
        finally:
            cap.release()
        if not rows:
            raise VideoError(f"no frames could be decoded from {video}")
        if not fps > 0:
            raise VideoError(f"{video} reports no frame rate ({fps})")
        return np.stack(rows), fps, width, height
