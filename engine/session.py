"""The one ONNX Runtime session every stream shares, and the contract the model file carries.

The model's `metadata_props` state its feature settings, fps, lookahead, window, state size and
landmark layout. `ModelSession` reads them at load time and refuses a model that does not match the
engine. Inputs/outputs (B = streams stacked in a batch, T = frames):
  feats    (B, T, W, F) float32  the W most recent feature hops for each frame (see docs/design.md)
  identity (B, 68, 2)   float32  neutral face in the canonical 256 px frame
  emotion  (B, E)       float32  optional one-hot emotion label; all zeros = infer from audio
  state    (B, S)       float32  recurrent state in
  -> landmarks (B, T, 68, 2) float32 canonical 256 px frame, head motion applied (ModelSession.run also
                                     applies the model's lip seal, engine.face.seal_lips)
  -> state_out (B, S)        float32 recurrent state out
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from engine.config import HOP_SAMPLES, LANDMARK_LAYOUT, N_LANDMARKS, SAMPLE_RATE_HZ, lip_seal_pct_value
from engine.face import seal_lips

log = logging.getLogger("kfusion.session")

DEFAULT_MODEL_NAME = "kfusion_stream.onnx"
CONTRACT_VERSION = "1"  # bump when the input/output contract above changes
INPUT_NAMES = ("feats", "identity", "emotion", "state")
OUTPUT_NAMES = ("landmarks", "state_out")


def default_model_path() -> Path:
    return Path(str(resources.files("engine") / "assets" / DEFAULT_MODEL_NAME))


@dataclass(frozen=True)
class ModelMeta:
    """What a model file promises, parsed from its metadata_props."""

    contract_version: str
    model_version: str
    config_hash: str
    sample_rate_hz: int
    hop_samples: int
    n_features: int
    feature_version: str
    fps: float
    lookahead_ms: float
    window_hops: int
    state_size: int
    n_emotions: int
    emotions: tuple[str, ...]
    landmark_layout: str
    coordinate_frame: str
    mean_face: np.ndarray  # (68, 2) canonical default identity
    lip_seal_pct: float = 0.0  # the output's lip seal (engine.face.seal_lips), % of the eye distance; 0 = none

    @classmethod
    def from_props(cls, props: dict[str, str], source: str) -> ModelMeta:
        required = [
            "kfusion_contract", "model_version", "config_hash", "sample_rate_hz", "hop_samples",
            "n_features", "feature_version", "fps", "lookahead_ms", "window_hops", "state_size",
            "emotions", "landmark_layout", "coordinate_frame", "mean_face",
        ]
        missing = [k for k in required if k not in props]
        if missing:
            raise ValueError(f"{source}: not a kfusion model, metadata_props lacks {missing}")
        emotions = tuple(json.loads(props["emotions"]))
        lip_seal_pct = lip_seal_pct_value(props.get("lip_seal_pct", "0"), f"{source}: metadata lip_seal_pct", text=True)
        mean_face = np.asarray(json.loads(props["mean_face"]), dtype=np.float32)
        return cls(
            contract_version=props["kfusion_contract"],
            model_version=props["model_version"],
            config_hash=props["config_hash"],
            sample_rate_hz=int(props["sample_rate_hz"]),
            hop_samples=int(props["hop_samples"]),
            n_features=int(props["n_features"]),
            feature_version=props["feature_version"],
            fps=float(props["fps"]),
            lookahead_ms=float(props["lookahead_ms"]),
            window_hops=int(props["window_hops"]),
            state_size=int(props["state_size"]),
            n_emotions=len(emotions),
            emotions=emotions,
            landmark_layout=props["landmark_layout"],
            coordinate_frame=props["coordinate_frame"],
            mean_face=mean_face,
            lip_seal_pct=lip_seal_pct,
        )

    def check_engine(self, source: str) -> None:
        """Refuse a model whose settings do not match this engine's, naming both values."""
        from engine import features  # local import: features pulls in numba

        expected = {
            "kfusion_contract": (CONTRACT_VERSION, self.contract_version),
            "sample_rate_hz": (SAMPLE_RATE_HZ, self.sample_rate_hz),
            "hop_samples": (HOP_SAMPLES, self.hop_samples),
            "n_features": (features.N_FEATURES, self.n_features),
            "feature_version": (features.FEATURE_VERSION, self.feature_version),
            "landmark_layout": (LANDMARK_LAYOUT, self.landmark_layout),
        }
        bad = {k: v for k, v in expected.items() if v[0] != v[1]}
        if bad:
            detail = ", ".join(f"{k}: engine expects {e!r}, model has {m!r}" for k, (e, m) in bad.items())
            raise ValueError(f"{source}: model does not match this engine ({detail})")
        if self.mean_face.shape != (N_LANDMARKS, 2):
            raise ValueError(f"{source}: mean_face must be ({N_LANDMARKS}, 2), got {self.mean_face.shape}")


def add_lip_seal_argument(p) -> None:
    """The --lip-seal-pct option of infer, serve and demo."""
    p.add_argument("--lip-seal-pct", type=float, default=None,
                   help="shut lips whose inner gap is under this %% of the eye distance (engine.face.seal_lips); "
                        "default: the model's own setting (1.0 for the shipped model); 0 turns it off")


def _providers(choice: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if choice == "cpu":
        return ["CPUExecutionProvider"]
    if choice == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ValueError(f"providers='cuda' needs onnxruntime-gpu and a GPU; available: {available}")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _preload_cuda_libraries(ort) -> None:
    """Load the CUDA and cuDNN libraries that pip's nvidia-* wheels install (`onnxruntime-gpu[cuda,cudnn]`):
    ONNX Runtime does not search those folders itself, and without them the CUDA provider fails to load and
    the session quietly runs on the CPU. Libraries already loaded (by torch, or from the system) are kept."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21
    if preload is not None:
        try:
            preload()
        except OSError as exc:  # a library it found but could not load: the provider check below reports it
            log.warning("could not preload the CUDA libraries: %s", exc)


class ModelSession:
    """A single read-only ONNX Runtime session: one intra-op thread, spinning off, shared by streams."""

    def __init__(self, path: str | os.PathLike | None = None, providers: str = "auto",
                 lip_seal_pct: float | None = None) -> None:
        """lip_seal_pct: the lip seal applied to every output (engine.face.seal_lips); None takes the model's
        own (metadata `lip_seal_pct`, 0 when absent)."""
        import onnxruntime as ort

        self.path = Path(path) if path is not None else default_model_path()
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # ONNX Runtime's CPU arena keeps the largest call's memory for good: one catch-up batch of 256 rows
        # left the process 9-10 MiB larger. Without the arena the same burst left about 2 MiB, at the same
        # speed (0.99-1.01x the time per call at batch 1-64; for 160-256 rows after smaller calls, where the C heap
        # can make it 1.5x slower, see "Tried and measured" in docs/scaling.md).
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 3
        wanted = _providers(providers)
        if wanted[0] == "CUDAExecutionProvider":
            _preload_cuda_libraries(ort)
        try:
            self._sess = ort.InferenceSession(str(self.path), opts, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise ValueError(f"{self.path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc
        if self._sess.get_providers()[0] != wanted[0]:  # ORT falls back to the CPU when CUDA fails to load
            why = (f"the CUDA provider of onnxruntime-gpu did not load (the CUDA and cuDNN libraries it was built for "
                   f"are missing or do not match the driver; `pip install 'onnxruntime-gpu[cuda,cudnn]'` "
                   f"brings them); the session runs on {self._sess.get_providers()}")
            if providers == "cuda":
                raise ValueError(f"providers='cuda': {why}")
            log.warning("%s", why)
        props = self._sess.get_modelmeta().custom_metadata_map
        self.meta = ModelMeta.from_props(props, str(self.path))
        self.meta.check_engine(str(self.path))
        names = tuple(i.name for i in self._sess.get_inputs())
        outs = tuple(o.name for o in self._sess.get_outputs())
        if set(names) != set(INPUT_NAMES) or set(outs) != set(OUTPUT_NAMES):
            raise ValueError(
                f"{self.path}: expected inputs {INPUT_NAMES} and outputs {OUTPUT_NAMES}, got {names} and {outs}"
            )
        self.lip_seal_pct = self.meta.lip_seal_pct if lip_seal_pct is None else lip_seal_pct_value(lip_seal_pct, text=True)
        self.providers = self._sess.get_providers()
        log.info("model %s (version %s) on %s", self.path.name, self.meta.model_version, self.providers[0])

    def initial_state(self, batch: int = 1) -> np.ndarray:
        return np.zeros((batch, self.meta.state_size), np.float32)

    def no_emotion(self, batch: int = 1) -> np.ndarray:
        return np.zeros((batch, self.meta.n_emotions), np.float32)

    def run(
        self,
        feats: np.ndarray,
        identity: np.ndarray,
        state: np.ndarray,
        emotion: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B,T,W,F), (B,68,2), (B,S)[, (B,E)] -> landmarks (B,T,68,2), state_out (B,S).

        The landmarks are the network's, with the session's lip seal applied (run_raw: without it)."""
        landmarks, state_out = self.run_raw(feats, identity, state, emotion)
        if self.lip_seal_pct > 0:
            landmarks = seal_lips(landmarks, self.lip_seal_pct)
        return landmarks, state_out

    def run_raw(self, feats: np.ndarray, identity: np.ndarray, state: np.ndarray,
                emotion: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ONNX model's own outputs, exactly (no lip seal): what the torch model computes."""
        if emotion is None:
            emotion = self.no_emotion(feats.shape[0])
        return tuple(self._sess.run(
            list(OUTPUT_NAMES),
            {"feats": feats, "identity": identity, "emotion": emotion, "state": state},
        ))
