"""The KFusion dual-domain model: a global (log-mel) GRU and a context (prosody) GRU fused by KAN layers.

Streaming variant: causal GRUs whose hidden states travel in and out as one flat (B, S) tensor.
Offline variant: bidirectional GRUs over the whole utterance (no state). Both predict per-frame
canonical landmark displacements from the identity face plus head motion, which is applied last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import torch
from torch import nn

from engine.config import N_LANDMARKS
from engine.face import CANONICAL_CENTRE_PX
from export.kan import KANLinear

EMOTIONS = ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised")
N_MEL = 80
HEAD_DIMS = 4  # [log_scale, angle_rad, dx_px, dy_px]
OUT_DIMS = N_LANDMARKS * 2 + HEAD_DIMS
# fitted on the training data before training starts (train.py), then left alone: fine-tunes of one model share them
NORMALISER_BUFFERS = ("feat_mean", "feat_std", "disp_mean", "disp_std", "head_mean", "head_std")
KAN_LAYERS = ("kan1", "kan2")  # KFusion's B-spline KAN layers (export/kan.py), in the order they run


@dataclass(frozen=True)
class ModelDims:
    """Everything needed to rebuild the network; stored next to the weights in every checkpoint."""

    n_features: int = 90
    feature_version: str = "kf1"
    fps: int = 30
    lookahead_ms: float = 80.0
    window_hops: int = 8
    bidirectional: bool = False  # True: offline model, whole-utterance context, no state
    conv_channels: int = 64
    enc_dim: int = 128
    global_hidden: int = 128
    global_layers: int = 2
    ctx_in: int = 48
    ctx_hidden: int = 64
    ctx_layers: int = 1
    emo_dim: int = 16
    n_emotions: int = len(EMOTIONS)
    kan_hidden: int = 64
    grid_size: int = 5
    spline_order: int = 3
    dropout: float = 0.3  # training only (encoder output and both GRU outputs)

    def __post_init__(self) -> None:
        if self.n_features <= N_MEL:
            raise ValueError(f"n_features must exceed the {N_MEL} log-mel bands, got {self.n_features}")
        if self.window_hops < 5:
            raise ValueError(f"window_hops must be >= 5 (two k=3 convolutions), got {self.window_hops}")
        if not 0 <= self.lookahead_ms <= 500:
            raise ValueError(f"lookahead_ms must be in [0, 500], got {self.lookahead_ms}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("conv_channels", "enc_dim", "global_hidden", "global_layers", "ctx_in", "ctx_hidden",
                     "ctx_layers", "kan_hidden", "grid_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def state_size(self) -> int:
        """Length of the flat recurrent state (0 for the bidirectional offline model)."""
        if self.bidirectional:
            return 0
        return self.global_layers * self.global_hidden + self.ctx_layers * self.ctx_hidden

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelDims:
        reject_unknown_fields(cls, d, "ModelDims")
        return cls(**d)


def reject_unknown_fields(cls, d: dict, what: str) -> None:
    """ValueError naming the keys of d that are not fields of the dataclass cls (and the known ones)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"{what} got unknown fields {sorted(unknown)} (known: {sorted(known)})")


def config_hash(config: dict) -> str:
    """Short stable hash of a training config (sorted JSON)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def apply_head_motion(canonical: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Torch twin of engine.face.apply_head_motion: x' = s R (x - c) + c + d, (...,68,2), (...,4)."""
    cx, cy = CANONICAL_CENTRE_PX
    s = torch.exp(head[..., 0:1])  # (..., 1)
    cos, sin = torch.cos(head[..., 1:2]) * s, torch.sin(head[..., 1:2]) * s
    x = canonical[..., 0] - cx
    y = canonical[..., 1] - cy
    nx = cos * x - sin * y + cx + head[..., 2:3]
    ny = sin * x + cos * y + cy + head[..., 3:4]
    return torch.stack([nx, ny], dim=-1)


class KFusion(nn.Module):
    """feats (B,T,W,F), identity (B,68,2), emotion (B,E), state (B,S) -> landmarks (B,T,68,2), state (B,S)."""

    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        self.dims = dims
        d = dims
        n_ctx = d.n_features - N_MEL
        dirs = 2 if d.bidirectional else 1
        # normalisers fitted on training data (identity until fitted)
        self.register_buffer("feat_mean", torch.zeros(d.n_features))
        self.register_buffer("feat_std", torch.ones(d.n_features))
        self.register_buffer("disp_mean", torch.zeros(N_LANDMARKS, 2))
        self.register_buffer("disp_std", torch.ones(N_LANDMARKS, 2))
        self.register_buffer("head_mean", torch.zeros(HEAD_DIMS))
        self.register_buffer("head_std", torch.full((HEAD_DIMS,), 1e-3))
        # global domain: two convolutions over the W-hop log-mel window, then a GRU over frames
        conv_out = d.window_hops - 4  # two k=3 convolutions, no padding
        self.mel_conv = nn.Sequential(
            nn.Conv1d(N_MEL, d.conv_channels, 3), nn.GELU(),
            nn.Conv1d(d.conv_channels, d.conv_channels, 3), nn.GELU(),
        )
        self.mel_proj = nn.Linear(d.conv_channels * conv_out, d.enc_dim)
        self.global_gru = nn.GRU(d.enc_dim, d.global_hidden, d.global_layers, batch_first=True,
                                 bidirectional=d.bidirectional)
        # context domain: prosody of the newest hop and the window mean, plus a mel summary
        self.ctx_proj = nn.Linear(2 * n_ctx + N_MEL, d.ctx_in)
        self.ctx_gru = nn.GRU(d.ctx_in, d.ctx_hidden, d.ctx_layers, batch_first=True,
                              bidirectional=d.bidirectional)
        self.drop = nn.Dropout(d.dropout)
        self.emo_embed = nn.Linear(d.n_emotions, d.emo_dim, bias=False)  # zeros -> zero embedding
        fused = dirs * (d.global_hidden + d.ctx_hidden) + d.emo_dim
        self.fuse_norm = nn.LayerNorm(fused)
        self.kan1 = KANLinear(fused, d.kan_hidden, d.grid_size, d.spline_order)
        self.kan_norm = nn.LayerNorm(d.kan_hidden)
        self.kan2 = KANLinear(d.kan_hidden, OUT_DIMS, d.grid_size, d.spline_order)

    def initial_state(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.dims.state_size)

    def _split_state(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.dims
        ng = d.global_layers * d.global_hidden
        hg = state[:, :ng].reshape(-1, d.global_layers, d.global_hidden).transpose(0, 1).contiguous()
        hc = state[:, ng:].reshape(-1, d.ctx_layers, d.ctx_hidden).transpose(0, 1).contiguous()
        return hg, hc

    def _mel_encode(self, mel: torch.Tensor) -> torch.Tensor:
        """mel_conv then mel_proj, as matrix products over the hop axis: (N, W, 80) -> (N, enc_dim).

        The same numbers as Conv1d (the weights are unchanged), but each k=3 convolution is one product
        of the 3 shifted windows side by side with the flattened kernel: one GEMM for the whole batch,
        where ONNX Runtime's Conv ran many tiny ones. mel_proj's weight is permuted to hop-major order."""
        h = mel
        for conv in (self.mel_conv[0], self.mel_conv[2]):
            cols = torch.cat([h[:, :-2], h[:, 1:-1], h[:, 2:]], dim=-1)  # (N, W', 3 * C_in)
            w = conv.weight.permute(0, 2, 1).flatten(1)  # (C_out, 3 * C_in), tap-major as cols
            h = torch.nn.functional.gelu(torch.nn.functional.linear(cols, w, conv.bias))  # (N, W', C_out)
        c = self.mel_conv[0].out_channels
        proj = self.mel_proj.weight.unflatten(1, (c, -1)).transpose(1, 2).flatten(1)  # (enc, W'' * C)
        return torch.nn.functional.linear(h.flatten(1), proj, self.mel_proj.bias)

    def forward(self, feats: torch.Tensor, identity: torch.Tensor, emotion: torch.Tensor,
                state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        canonical, head, state_out = self.parts(feats, identity, emotion, state)
        return apply_head_motion(canonical, head), state_out

    def parts(self, feats: torch.Tensor, identity: torch.Tensor, emotion: torch.Tensor,
              state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training view: canonical (B,T,68,2) before head motion, head (B,T,4), state_out (B,S)."""
        d = self.dims
        x = (feats - self.feat_mean) / self.feat_std  # (B, T, W, F) normalised
        mel = x[..., :N_MEL]  # (B, T, W, 80)
        ctx = x[..., N_MEL:]  # (B, T, W, F - 80)
        enc = self._mel_encode(mel.flatten(0, 1))  # (B*T, enc_dim)
        enc = self.drop(enc.reshape(feats.shape[0], feats.shape[1], d.enc_dim))
        ctx_in = torch.cat([ctx[:, :, -1], ctx.mean(2), mel.mean(2)], dim=-1)
        ctx_in = torch.nn.functional.gelu(self.ctx_proj(ctx_in))  # (B, T, ctx_in)
        if d.bidirectional:
            g, _ = self.global_gru(enc)
            c, _ = self.ctx_gru(ctx_in)
            state_out = state
        else:
            hg, hc = self._split_state(state)
            g, hg = self.global_gru(enc, hg)
            c, hc = self.ctx_gru(ctx_in, hc)
            state_out = torch.cat([hg.transpose(0, 1).flatten(1), hc.transpose(0, 1).flatten(1)], dim=1)
        e = self.emo_embed(emotion).unsqueeze(1).expand(-1, g.shape[1], -1)  # (B, T, emo_dim)
        z = self.fuse_norm(torch.cat([self.drop(g), self.drop(c), e], dim=-1))
        out = self.kan2(self.kan_norm(self.kan1(z)))  # (B, T, 140)
        disp = out[..., : N_LANDMARKS * 2].unflatten(-1, (N_LANDMARKS, 2)) * self.disp_std + self.disp_mean
        head = out[..., N_LANDMARKS * 2:] * self.head_std + self.head_mean
        canonical = identity.unsqueeze(1) + disp  # (B, T, 68, 2)
        return canonical, head, state_out


class TrainView(nn.Module):
    """Training view (what DistributedDataParallel wraps): zero initial state -> (canonical, head)."""

    def __init__(self, model: KFusion) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, identity: torch.Tensor,
                emotion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.model.initial_state(feats.shape[0]).to(feats.device)
        canonical, head, _ = self.model.parts(feats, identity, emotion, state)
        return canonical, head


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
