"""Train the KFusion model (streaming or offline) on synthetic + pack-train data, select on pack val.

Usage: kfusion train [--config cfg.json] [--variant stream|offline] [--steps N] [--out DIR] [--resume CKPT]
Multi-GPU: torchrun --nproc_per_node=G -m engine.cli train ... (DistributedDataParallel, from WORLD_SIZE).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.cache import cache_dir
from engine.face import inner_lip_gap
from export.data.perturb import check_factor
from export.data.smooth import check_frames, smoothed_targets
from export.data.vtlp import MAX_VTLP, warp_log_mel
from export.model import NORMALISER_BUFFERS, ModelDims, config_hash, reject_unknown_fields

log = logging.getLogger("kfusion.train")
DEFAULT_OUT = str(cache_dir("train", "stream"))
DEFAULT_SYNTH = str(cache_dir("synth"))


@dataclass(frozen=True)
class TrainConfig:
    """One training run, validated once; stored (and hashed) in every checkpoint."""

    variant: str = "stream"  # stream (causal, stateful) | offline (bidirectional)
    dims: ModelDims = field(default_factory=ModelDims)
    pack_root: str = ""  # "" = the pack next to the repo (export.data.pack.PACK_DIR)
    synth_root: str = DEFAULT_SYNTH  # "" = no synthetic data
    seed: int = 0
    steps: int = 1500
    batch_size: int = 16
    crop_frames: int = 90  # 3 s at 30 fps
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    grad_clip: float = 1.0
    pack_fraction: float = 0.35  # share of batch rows drawn from the pack (rest: synthetic)
    finetune_after: float = 0.7  # fraction of steps after which pack_fraction becomes finetune_pack_fraction
    finetune_pack_fraction: float = 0.35  # = pack_fraction: on this pack a pack-heavy tail overfits
    emotion_dropout: float = 0.5  # chance a known emotion label is hidden (zeros = infer from audio)
    mouth_weight: float = 3.0
    jaw_weight: float = 1.5
    l2_weight: float = 0.02  # on squared px error, next to the L1 term
    velocity_weight: float = 1.0
    head_weight: float = 0.05
    kan_reg_weight: float = 1e-4
    sync_from: str = ""  # checkpoint that re-syncs the pack's train segments first (export.data.sync); "" = off
    lip_corr_weight: float = 0.0  # > 0: add (1 - Pearson r) of the inner-lip gap per crop (undoes damping)
    lip_gap_weight: float = 0.0  # > 0: add the L1 error of the inner-lip gap in px (lips that shut fully)
    lip_gap_synth_only: bool = False  # the lip-gap L1 on synthetic rows only (exact closures, no tracker noise)
    closure_weight: float = 0.0  # > 0: inner-lip gap L1 where synthetic lips are shut (p, b, m, rests)
    gain_db: float = 10.0  # augmentation: random level change of up to +-gain_db per crop
    freq_mask_bands: int = 12  # augmentation: one run of up to this many mel bands set to its mean
    eq_db: float = 0.0  # augmentation: random smooth equaliser per crop, tilt up to +-eq_db, bow up to +-eq_db/2
    vtlp: float = 0.0  # augmentation: each crop's log-mel spectrum scaled by alpha in [1 - vtlp, 1 + vtlp] (0 = off)
    init_from: str = ""  # start from these weights (same dims): a .pt checkpoint or an exported .onnx
    speed_perturb: tuple = ()  # e.g. (0.9, 1.1): add the pack's train segments played at these speeds
    mirror: bool = False  # add the pack's train segments (and their speed copies) mirrored left-right
    target_smooth_frames: int = 1  # odd; > 1: the pack's train targets through a centred moving average (1 = off)
    target_keep_closures: bool = False  # with target_smooth_frames > 1: lips shut in the raw track stay shut
    eval_every: int = 100
    max_minutes: float = 55.0  # > 0: stop (and keep the best checkpoint) after this much wall time

    def __post_init__(self) -> None:
        if self.variant not in ("stream", "offline"):
            raise ValueError(f"variant must be 'stream' or 'offline', got {self.variant!r}")
        if self.dims.bidirectional != (self.variant == "offline"):
            raise ValueError(f"variant {self.variant!r} needs dims.bidirectional={self.variant == 'offline'}")
        for name in ("steps", "batch_size", "crop_frames", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if isinstance(self.speed_perturb, (str, bytes)) or not hasattr(self.speed_perturb, "__iter__"):
            raise ValueError(f"speed_perturb must be a list of speed factors, got {self.speed_perturb!r}")
        object.__setattr__(self, "speed_perturb", tuple(check_factor(f) for f in self.speed_perturb))
        check_frames(self.target_smooth_frames)
        if self.target_keep_closures and self.target_smooth_frames == 1:
            raise ValueError("target_keep_closures needs target_smooth_frames > 1 (it keeps the smoothing from "
                             "opening shut lips), got target_smooth_frames 1")
        if not 0.0 <= self.eq_db <= 24.0:
            raise ValueError(f"eq_db must be in [0, 24] dB, got {self.eq_db}")
        if not 0.0 <= self.vtlp <= MAX_VTLP:
            raise ValueError(f"vtlp must be in [0, {MAX_VTLP}], got {self.vtlp}")
        for name in ("pack_fraction", "finetune_after", "finetune_pack_fraction", "emotion_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        reject_unknown_fields(cls, d, "the training config")
        d = dict(d)
        if isinstance(d.get("dims"), dict):
            d["dims"] = ModelDims.from_dict(d["dims"])
        return cls(**d)


def load_config(path: str | None, overrides: dict) -> TrainConfig:
    """JSON or TOML file (optional) with flag overrides on top; `dims` merges key by key."""
    base: dict = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        if p.suffix == ".toml":
            import tomllib

            base = tomllib.loads(p.read_text())
        else:
            base = json.loads(p.read_text())
    dims = dict(base.pop("dims", {}))
    dims.update(overrides.pop("dims", {}))
    base.update({k: v for k, v in overrides.items() if v is not None})
    variant = base.get("variant", "stream")
    dims.setdefault("bidirectional", variant == "offline")
    if variant == "offline":
        dims.setdefault("lookahead_ms", 0.0)
    base["dims"] = ModelDims.from_dict(dims)
    return TrainConfig.from_dict(base)


def _speed_list(text: str) -> tuple:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated speed factors like 0.9,1.1, got {text!r}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON or TOML training config (flags override it)")
    parser.add_argument("--variant", choices=("stream", "offline"))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int, dest="batch_size")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--synth-root", dest="synth_root", help="synthetic corpus folder ('' = none)")
    parser.add_argument("--pack-root", dest="pack_root")
    parser.add_argument("--max-minutes", type=float, dest="max_minutes")
    parser.add_argument("--eval-every", type=int, dest="eval_every")
    parser.add_argument("--pack-fraction", type=float, dest="pack_fraction")
    parser.add_argument("--lip-corr-weight", type=float, dest="lip_corr_weight",
                        help="weight of the per-crop inner-lip gap correlation loss (0 = off)")
    parser.add_argument("--lip-gap-weight", type=float, dest="lip_gap_weight",
                        help="weight of the inner-lip gap L1 loss in px (0 = off): lips that shut on p, b, m")
    parser.add_argument("--lip-gap-synth-only", action="store_true", default=None, dest="lip_gap_synth_only",
                        help="apply the lip-gap L1 to synthetic rows only (their closures are exact)")
    parser.add_argument("--closure-weight", type=float, dest="closure_weight",
                        help="weight of the closure term: inner-lip gap L1 in px where synthetic lips are shut "
                             f"(true gap <= {CLOSED_GAP_PX} px); 0 = off")
    parser.add_argument("--velocity-weight", type=float, dest="velocity_weight")
    parser.add_argument("--sync-from", dest="sync_from",
                        help="checkpoint (.pt) or exported streaming model (.onnx) used to find and undo each "
                             "real train clip's audio-video offset")
    parser.add_argument("--speed-perturb", dest="speed_perturb", type=_speed_list,
                        help="comma-separated speed factors, e.g. 0.9,1.1: the pack's train segments are also used "
                             "played at these speeds, face tracks resampled to match (export/data/perturb.py)")
    parser.add_argument("--eq-db", dest="eq_db", type=float,
                        help="augmentation: a random smooth equaliser on each crop's log-mel (a tilt of up to "
                             "+-EQ_DB across the bands plus a bow of up to half that; 0 = off), for unseen channels")
    parser.add_argument("--vtlp", type=float,
                        help="augmentation: each crop's log-mel spectrum scaled in frequency by a factor in "
                             "[1 - VTLP, 1 + VTLP], as another speaker's vocal tract would (export/data/vtlp.py)")
    parser.add_argument("--mirror", action="store_true", default=None,
                        help="the pack's train segments are also used mirrored left-right, the sound kept "
                             "(export/data/mirror.py)")
    parser.add_argument("--target-smooth-frames", dest="target_smooth_frames", type=int,
                        help="odd window (frames): the pack's train targets through a centred moving average, "
                             "which takes out tracker jitter (export/data/smooth.py); 1 = off")
    parser.add_argument("--target-keep-closures", dest="target_keep_closures", action="store_true", default=None,
                        help="with --target-smooth-frames: where a train track's lips are shut (inner gap <= 2 %% of "
                             "the eye distance), the smoothing may not open them")
    parser.add_argument("--lookahead-ms", type=float, dest="lookahead_ms")
    parser.add_argument("--window-hops", type=int, dest="window_hops")
    parser.add_argument("--global-hidden", type=int, dest="global_hidden")
    parser.add_argument("--out", default=None, help=f"run folder (default {DEFAULT_OUT}, or ..._offline)")
    parser.add_argument("--resume", help="continue from this checkpoint (same config)")
    parser.add_argument("--init-from", dest="init_from",
                        help="start from these weights (same dims): a training checkpoint (.pt) or an exported "
                             "streaming model (.onnx), e.g. engine/assets/kfusion_stream.onnx to fine-tune "
                             "the shipped model")


def run(args: argparse.Namespace) -> int:
    dims = {k: getattr(args, k) for k in ("lookahead_ms", "window_hops", "global_hidden")
            if getattr(args, k) is not None}
    over = {k: getattr(args, k) for k in ("variant", "steps", "batch_size", "lr", "seed", "synth_root",
                                          "pack_root", "max_minutes", "eval_every", "pack_fraction", "init_from",
                                          "lip_corr_weight", "lip_gap_weight", "lip_gap_synth_only", "velocity_weight",
                                          "sync_from", "closure_weight", "speed_perturb", "mirror", "eq_db", "vtlp",
                                          "target_smooth_frames", "target_keep_closures")}
    cfg = load_config(args.config, {**over, "dims": dims})
    out = Path(args.out or (DEFAULT_OUT if cfg.variant == "stream" else DEFAULT_OUT + "_offline"))
    best = train(cfg, out, resume=args.resume)
    if env_rank()[1] == 0:  # under torchrun only rank 0 writes checkpoints
        print(f"best checkpoint: {best}")
    return 0


def config_id(cfg: TrainConfig) -> str:
    return config_hash(cfg.to_dict())


def stored_config_id(config: dict) -> str:
    """The id a checkpoint's stored config has today: options added since it was saved take their defaults
    (all of them off), so a run saved before an option existed still resumes under the same settings."""
    return config_id(TrainConfig.from_dict(config))


def init_weights(path: str, dims: ModelDims) -> dict:
    """The state_dict --init-from starts from: a training checkpoint (.pt) or a streaming export (.onnx)."""
    import torch

    if Path(path).suffix.lower() != ".onnx":
        return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    from export.onnx_import import state_dict_from_onnx

    got, state_dict, _ = state_dict_from_onnx(path)
    bad = [f"{k} {v!r} (this run: {getattr(dims, k)!r})" for k, v in got.to_dict().items()
           if k != "dropout" and v != getattr(dims, k)]  # dropout acts in training only: not in the graph
    if bad:
        raise ValueError(f"{path} does not match this run's model dims: {', '.join(bad)}")
    return state_dict


def env_rank() -> tuple[int, int, int]:
    """(world_size, rank, local_rank) from torchrun's environment (1, 0, 0 without it)."""
    return (int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
            int(os.environ.get("LOCAL_RANK", "0")))


def elapsed_min(t0: float) -> float:
    return (time.time() - t0) / 60.0


def any_rank(flag: bool, device) -> bool:
    """True on every rank when it is True on any (an all-reduce): ranks that stopped at different steps
    would leave the others waiting in their next gradient all-reduce until the process group times out."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def sampler_state_for(rank: int, saved: list, seed: int, step: int):
    """The sampler's RNG state to resume `rank` with: its own saved state, else (a rank the checkpoint did
    not record) a fresh stream of its own, so no two ranks draw the same crops."""
    if rank < len(saved):
        return saved[rank]
    return np.random.default_rng([seed, rank, step]).bit_generator.state


def mix_fractions(cfg: TrainConfig, step: int) -> dict[str, float]:
    pf = cfg.finetune_pack_fraction if step >= cfg.finetune_after * cfg.steps else cfg.pack_fraction
    return {"pack": pf, "synth": 1.0 - pf}


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up then cosine decay to 5 % of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    q = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + np.cos(np.pi * min(q, 1.0))))


MOUTH = slice(48, 68)
CLOSED_GAP_PX = 0.5  # closure_loss: a synthetic frame whose true inner-lip gap is at most this is shut
LIP_GAP_MIN_STD_PX = 0.5  # crops whose true inner-lip gap moves less than this are left out of lip_corr
JAW = slice(0, 17)


def point_weights(cfg: TrainConfig):
    import torch

    w = torch.ones(68)
    w[MOUTH] = cfg.mouth_weight
    w[JAW] = cfg.jaw_weight
    return w / w.mean()


def augment(feats, feat_mean, cfg: TrainConfig, gen):
    """Level change (log-mel and log-RMS shift where not silent), a smooth equaliser curve (eq_db > 0) and one
    mel frequency mask, per row.

    feats (B, T, W, F) raw features; returns a new tensor. Silent bins (at the log floor) stay silent.
    """
    import torch

    from engine import features as fx

    b = feats.shape[0]
    i_rms = fx.N_MELS + fx.CONTEXT_NAMES.index("log_rms")
    out = feats.clone()
    if cfg.vtlp > 0:  # another speaker's formants: the spectrum scaled by alpha (export/data/vtlp.py)
        alpha = 1.0 + (torch.rand(b, generator=gen) * 2 - 1) * cfg.vtlp
        out[..., : fx.N_MELS] = warp_log_mel(out[..., : fx.N_MELS], alpha)
    g_db = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * cfg.gain_db
    mel = out[..., : fx.N_MELS]
    loud = mel > float(np.log(fx.MEL_FLOOR)) + 2.0
    out[..., : fx.N_MELS] = torch.where(loud, mel + g_db * float(np.log(10) / 10), mel)
    if cfg.eq_db > 0:  # a channel the model never heard: tilt (-1..1 across the bands) plus a half-cosine bow
        x = torch.linspace(-1.0, 1.0, fx.N_MELS)
        tilt = (torch.rand(b, 1, generator=gen) * 2 - 1) * cfg.eq_db
        bow = (torch.rand(b, 1, generator=gen) * 2 - 1) * cfg.eq_db / 2
        curve_db = tilt * x[None] + bow * torch.cos(x[None] * (np.pi / 2))  # (B, 80)
        mel = out[..., : fx.N_MELS]
        out[..., : fx.N_MELS] = torch.where(loud, mel + curve_db[:, None, None, :] * float(np.log(10) / 10), mel)
    rms = out[..., i_rms:i_rms + 1]
    out[..., i_rms:i_rms + 1] = torch.where(rms > float(np.log(fx.RMS_FLOOR)) + 1.0,
                                                         rms + g_db * float(np.log(10) / 20), rms)
    if cfg.freq_mask_bands > 0:
        width = torch.randint(0, cfg.freq_mask_bands + 1, (b,), generator=gen)
        start = torch.randint(0, fx.N_MELS - cfg.freq_mask_bands, (b,), generator=gen)
        band = torch.arange(fx.N_MELS)
        m = (band[None] >= start[:, None]) & (band[None] < (start + width)[:, None])  # (B, 80)
        m = m[:, None, None, :].expand_as(out[..., : fx.N_MELS])
        out[..., : fx.N_MELS] = torch.where(m, feat_mean[: fx.N_MELS].expand_as(m), out[..., : fx.N_MELS])
    return out


def loss_terms(model, canon, head, batch, cfg: TrainConfig, w_pts) -> dict:
    """Weighted L1 (+ small L2) on canonical landmarks, velocity L1, head-motion L1 (normalised)."""
    m = batch["mask"]  # (B, T)
    n = m.sum().clamp_min(1.0)
    err = canon - batch["canonical"]  # (B, T, 68, 2) px
    l1 = (err.abs().sum(-1) * w_pts).mean(-1)  # (B, T)
    l2 = ((err**2).sum(-1) * w_pts).mean(-1)
    mv = m[:, 1:] * m[:, :-1]
    dv = (canon[:, 1:] - canon[:, :-1]) - (batch["canonical"][:, 1:] - batch["canonical"][:, :-1])
    vel = (dv.abs().sum(-1) * w_pts).mean(-1)
    hd = ((head - batch["head"]).abs() / model.head_std).mean(-1)
    terms = {
        "l1": (l1 * m).sum() / n,
        "l2": (l2 * m).sum() / n,
        "vel": (vel * mv).sum() / mv.sum().clamp_min(1.0),
        "head": (hd * m).sum() / n,
        "kan": model.kan1.regularization_loss() + model.kan2.regularization_loss(),
    }
    terms["lip_corr"] = lip_gap_corr_loss(canon, batch["canonical"], m)
    gm = m * batch["synthetic"][:, None] if cfg.lip_gap_synth_only else m  # rows the lip-gap L1 sees
    terms["lip_gap"] = ((inner_lip_gap(canon) - inner_lip_gap(batch["canonical"])).abs() * gm).sum() / gm.sum().clamp_min(1.0)
    terms["closure"] = closure_loss(canon, batch, m)
    terms["loss"] = (terms["l1"] + cfg.l2_weight * terms["l2"] + cfg.velocity_weight * terms["vel"]
                     + cfg.head_weight * terms["head"] + cfg.kan_reg_weight * terms["kan"]
                     + cfg.lip_corr_weight * terms["lip_corr"] + cfg.lip_gap_weight * terms["lip_gap"]
                     + cfg.closure_weight * terms["closure"])
    return terms


def closure_loss(pred, batch, mask, closed_px: float = CLOSED_GAP_PX):
    """Mean px L1 error of the inner-lip gap on synthetic frames whose lips are shut: lips that meet, not cross.

    Only synthetic rows count: their closures are exact (tracked real lips rarely read 0). Open frames are left
    to the other terms. (A one-sided version, paying only a gap wider than the truth, shut 99.5 % of the
    synthetic val p, b, m but let the lips cross, to a median gap of -1 % of the eye distance.)
    """
    truth = inner_lip_gap(batch["canonical"])
    synthetic = batch.get("synthetic")
    if synthetic is None:
        return pred.new_zeros(())
    cm = mask * synthetic[:, None] * (truth <= closed_px)
    return ((inner_lip_gap(pred) - truth).abs() * cm).sum() / cm.sum().clamp_min(1.0)


def lip_gap_corr_loss(pred, truth, mask, min_std_px: float = LIP_GAP_MIN_STD_PX):
    """Mean over crops of 1 - Pearson r between predicted and true inner-lip gap (masked frames).

    Scale-free, so unlike L1 it does not reward a damped, average mouth. Crops whose true gap barely
    moves (std under min_std_px: silence, a closed mouth) are left out; 0 when none is left."""
    import torch

    n = mask.sum(1).clamp_min(1.0)  # (B,)
    gp, gt = inner_lip_gap(pred), inner_lip_gap(truth)
    cp = (gp - (gp * mask).sum(1, keepdim=True) / n[:, None]) * mask
    ct = (gt - (gt * mask).sum(1, keepdim=True) / n[:, None]) * mask
    vp, vt = (cp * cp).sum(1), (ct * ct).sum(1)
    r = (cp * ct).sum(1) / torch.sqrt(vp * vt + 1e-6)
    keep = (vt / n > min_std_px**2).to(pred.dtype)
    return ((1.0 - r) * keep).sum() / keep.sum().clamp_min(1.0)


def validate(model, items, device) -> dict:
    """Whole val segments from the zero state: mouth / all-point error (px, canonical), lip-gap corr."""
    import torch

    from export.dataset import full_batch

    model.eval()
    mouth, allp, static, corr, frames = 0.0, 0.0, 0.0, [], 0
    with torch.no_grad():
        for it in items:
            b = {k: torch.from_numpy(v).to(device) for k, v in full_batch(it).items()}
            canon, _, _ = model.parts(b["feats"], b["identity"], b["emotion"], model.initial_state(1).to(device))
            pred = canon[0].cpu().numpy()
            d = np.linalg.norm(pred - it.canonical, axis=-1)  # (T, 68)
            ds = np.linalg.norm(it.identity[None] - it.canonical, axis=-1)
            mouth += d[:, MOUTH].mean(1).sum()
            allp += d.mean(1).sum()
            static += ds[:, MOUTH].mean(1).sum()
            frames += it.frames
            gp, gt = inner_lip_gap(pred), inner_lip_gap(it.canonical)
            if gp.std() > 1e-6 and gt.std() > 1e-6:
                corr.append(float(np.corrcoef(gp, gt)[0, 1]))
    model.train()
    r = float(np.mean(corr)) if corr else float("nan")
    return {"mouth_px": round(float(mouth / frames), 4), "all_px": round(float(allp / frames), 4),
            "static_mouth_px": round(float(static / frames), 4), "lip_gap_r": round(r, 4)}


def load_pools(cfg: TrainConfig):
    """(train pools {'pack', 'synth'}, pack val items, mean face, sync report) with features cached per segment."""
    from export.data import pack
    from export.dataset import make_items

    root = cfg.pack_root or pack.PACK_DIR
    train_segs, sync_report = pack.load_segments(root, "train", cfg.dims.fps), []
    if cfg.sync_from:
        from export.data.sync import align_segments

        train_segs, sync_report = align_segments(train_segs, cfg.sync_from)
    if cfg.target_smooth_frames > 1:  # after the re-sync, so each clip is smoothed at its corrected offset
        train_segs = [smoothed_targets(s, cfg.target_smooth_frames, cfg.target_keep_closures) for s in train_segs]
    if cfg.speed_perturb:  # after the re-sync: each copy keeps its clip's corrected offset
        from export.data.perturb import speed_perturbed

        train_segs = train_segs + [speed_perturbed(s, f) for f in cfg.speed_perturb for s in train_segs]
    if cfg.mirror:
        from export.data.mirror import mirrored

        train_segs = train_segs + [mirrored(s) for s in train_segs]
    pools = {"pack": make_items(train_segs, cfg.dims, desc="pack train")}
    if cfg.synth_root:
        if not (Path(cfg.synth_root) / "manifest.json").is_file():
            raise FileNotFoundError(f"no synthetic corpus at {cfg.synth_root} (pass --synth-root '' to skip)")
        segs = pack.load_segments(cfg.synth_root, "train", cfg.dims.fps)
        pools["synth"] = make_items(segs, cfg.dims, desc="synth train")
    val = make_items(pack.load_segments(root, "val", cfg.dims.fps), cfg.dims, desc="pack val")
    return pools, val, pack.reference_shape(root), sync_report


def train(cfg: TrainConfig, out: Path, resume: str | None = None) -> Path:
    """Run the training loop; rank 0 validates and writes last.pt / best.pt / log.jsonl in `out`."""
    import torch
    from tqdm import tqdm

    from export.dataset import BatchSampler, fit_normaliser
    from export.model import KFusion, TrainView
    from export.predict import save_checkpoint

    world, rank, local_rank = env_rank()
    torch.set_num_threads(1)
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group(backend="nccl" if cuda else "gloo")
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    cid = config_id(cfg)
    if rank == 0:
        log.info("config %s (hash %s)", json.dumps(cfg.to_dict(), sort_keys=True), cid)
        log.info("device %s, %d process(es)%s", device, world,
                 f" (DistributedDataParallel, {'nccl' if cuda else 'gloo'})" if world > 1 else "")
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True))
    torch.manual_seed(cfg.seed)
    pools, val, mean_face, sync_report = load_pools(cfg)
    if rank == 0:
        if sync_report:
            (out / "sync_offsets.json").write_text(json.dumps(sync_report, indent=1))
        for name, items in {**pools, "pack val": val}.items():
            log.info("%s: %d segments, %.1f min", name, len(items), sum(it.frames for it in items) / cfg.dims.fps / 60)
    norm = fit_normaliser([it for p in pools.values() for it in p])
    model = KFusion(cfg.dims)
    for name in NORMALISER_BUFFERS:
        getattr(model, name).copy_(torch.from_numpy(getattr(norm, name)))
    if cfg.init_from:
        model.load_state_dict(init_weights(cfg.init_from, cfg.dims))  # normaliser too: same features, targets
        log.info("initialised from %s", cfg.init_from)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = BatchSampler(pools, cfg.crop_frames, cfg.batch_size, cfg.seed + 1000 * rank, cfg.emotion_dropout)
    step, best = 0, {"mouth_px": float("inf")}
    if resume:
        ck = torch.load(resume, map_location="cpu", weights_only=False)
        saved = stored_config_id(ck["config"])
        if saved != cid:
            raise ValueError(f"{resume} was trained with config {saved}, this run is {cid}: resume with the "
                             f"settings of its config.json")
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        step, best = ck["step"], ck.get("best", best)
        sampler.rng.bit_generator.state = sampler_state_for(rank, ck["sampler_rng"], cfg.seed, step)
        log.info("resumed %s at step %d", resume, step)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(TrainView(model), device_ids=[local_rank] if cuda else None)
    else:
        net = TrainView(model)
    w_pts = point_weights(cfg).to(device)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 7 + 1000 * rank + step)
    version = f"{cfg.variant}-{cid[:8]}"

    def save(path: Path, metrics: dict) -> None:
        save_checkpoint(path, model, cfg.to_dict(), mean_face, f"{version}-s{step}", step=step,
                        optimizer=opt.state_dict(), best=best, metrics=metrics,
                        sampler_rng=[sampler.rng.bit_generator.state], minutes=elapsed_min(t0))

    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.variant}", unit="step", disable=rank != 0)
    run_log = (out / "log.jsonl").open("a") if rank == 0 else None
    running: dict[str, float] = {}
    stop = False
    while step < cfg.steps and not stop:
        batch = {k: torch.from_numpy(v).to(device) for k, v in sampler.batch(mix_fractions(cfg, step)).items()}
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        feats = augment(batch["feats"].cpu(), model.feat_mean.cpu(), cfg, aug_gen).to(device)
        canon, head = net(feats, batch["identity"], batch["emotion"])
        terms = loss_terms(model, canon, head, batch, cfg, w_pts)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        for k, v in terms.items():
            v = float(v.detach())
            running[k] = 0.95 * running.get(k, v) + 0.05 * v
        bar.update(1)
        bar.set_postfix(loss=f"{running['loss']:.3f}", l1=f"{running['l1']:.3f}")
        stop = cfg.max_minutes > 0 and elapsed_min(t0) > cfg.max_minutes
        if world > 1 and cfg.max_minutes > 0:  # each rank's clock differs: all stop at the same step
            stop = any_rank(stop, device)
        if rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps or stop):
            metrics = {"step": step, "minutes": round(elapsed_min(t0), 2), "lr": lr_at(cfg, step - 1),
                       **{f"train_{k}": round(v, 4) for k, v in running.items()}, **validate(model, val, device)}
            if metrics["mouth_px"] < best["mouth_px"]:
                best = dict(metrics)
                save(out / "best.pt", metrics)
            save(out / "last.pt", metrics)
            run_log.write(json.dumps(metrics) + "\n")
            run_log.flush()
            bar.write(f"step {step}: val mouth {metrics['mouth_px']:.3f} px "
                      f"(static {metrics['static_mouth_px']:.3f}) all {metrics['all_px']:.3f} px, lip-gap r {metrics['lip_gap_r']:.3f}")
    bar.close()
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return out / "best.pt"
