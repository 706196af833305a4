"""The paper's own architecture as a benchmark peer: frozen wav2vec2-base plus its dual-domain heads.

    peer = PaperPeer.build(seed=0); landmarks = peer(audio)  # (B, 16000) -> (B, 30, 68, 2)

wav2vec2-base is built from its configuration with random weights (no hub downloads): a 7-layer conv
feature encoder (512 channels), a conv positional embedding (128 taps, 16 groups) and a 12-layer
transformer (768 hidden, 12 heads, 3072 FFN). The heads follow the paper's layout (global domain:
transformer encoder; context domain: BiLSTM and convolutions; KAN fusion) with widths of our choosing,
since the paper gives the layout, not the widths; `kfusion bench model` reports their share of the time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.config import N_LANDMARKS, SAMPLE_RATE_HZ
from export.kan import KANLinear

WINDOW_SECONDS = 1
WINDOW_SAMPLES = SAMPLE_RATE_HZ * WINDOW_SECONDS  # one analysis window of 16 kHz audio
FRAMES_PER_WINDOW = 30  # 30 fps landmark frames per 1 s window


@dataclass(frozen=True)
class PeerDims:
    """Head sizes (our choice; the paper gives the layout, not the widths)."""

    w2v_hidden: int = 768  # wav2vec2-base output width
    head_dim: int = 256
    transformer_layers: int = 2
    transformer_heads: int = 4
    transformer_ffn: int = 1024
    lstm_hidden: int = 128  # per direction
    conv_kernel: int = 3
    identity_dim: int = 64
    kan_hidden: int = 256


def wav2vec2_base() -> tuple[nn.Module, str]:
    """A randomly initialised wav2vec2-base and how it was built ('transformers X.Y')."""
    import transformers
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config()  # the base configuration: 12 x 768, 12 heads, 3072 FFN, 7 x 512 conv
    expected = {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "num_conv_pos_embeddings": 128,
        "num_conv_pos_embedding_groups": 16,
    }
    wrong = {k: (v, getattr(config, k)) for k, v in expected.items() if getattr(config, k) != v}
    if wrong or tuple(config.conv_dim) != (512,) * 7:
        raise ValueError(
            f"Wav2Vec2Config() is not wav2vec2-base here (expected, got): {wrong}, {config.conv_dim}"
        )
    return Wav2Vec2Model(config), f"transformers {transformers.__version__}"


class DualDomainHeads(nn.Module):
    """wav2vec2 features (B, N, 768) + identity (B, 68, 2) -> landmarks (B, 30, 68, 2)."""

    def __init__(self, d: PeerDims) -> None:
        super().__init__()
        self.proj = nn.Linear(d.w2v_hidden, d.head_dim)
        layer = nn.TransformerEncoderLayer(
            d.head_dim, d.transformer_heads, d.transformer_ffn, batch_first=True, norm_first=True
        )
        self.global_domain = nn.TransformerEncoder(layer, d.transformer_layers, enable_nested_tensor=False)
        self.context_lstm = nn.LSTM(d.head_dim, d.lstm_hidden, batch_first=True, bidirectional=True)
        pad = d.conv_kernel // 2
        self.context_conv = nn.Sequential(
            nn.Conv1d(2 * d.lstm_hidden, d.head_dim, d.conv_kernel, padding=pad),
            nn.GELU(),
            nn.Conv1d(d.head_dim, d.head_dim, d.conv_kernel, padding=pad),
            nn.GELU(),
        )
        self.identity = nn.Linear(N_LANDMARKS * 2, d.identity_dim)
        fused = 2 * d.head_dim + d.identity_dim
        self.norm = nn.LayerNorm(fused)
        self.kan1 = KANLinear(fused, d.kan_hidden)
        self.kan2 = KANLinear(d.kan_hidden, N_LANDMARKS * 2)

    def forward(self, w2v: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        x = self.proj(w2v).transpose(1, 2)  # (B, 256, N) at wav2vec2's 50 Hz
        x = nn.functional.interpolate(x, size=FRAMES_PER_WINDOW, mode="linear", align_corners=False)
        x = x.transpose(1, 2)  # (B, 30, 256) at 30 fps
        g = self.global_domain(x)  # (B, 30, 256)
        c, _ = self.context_lstm(x)  # (B, 30, 256)
        c = self.context_conv(c.transpose(1, 2)).transpose(1, 2)  # (B, 30, 256)
        ident = self.identity(identity.flatten(1)).unsqueeze(1).expand(-1, FRAMES_PER_WINDOW, -1)
        z = self.norm(torch.cat([g, c, ident], dim=-1))
        disp = self.kan2(self.kan1(z)).unflatten(-1, (N_LANDMARKS, 2))  # (B, 30, 68, 2)
        return identity.unsqueeze(1) + disp


class PaperPeer(nn.Module):
    """audio (B, 16000) float32 at 16 kHz, identity (B, 68, 2) -> landmarks (B, 30, 68, 2)."""

    def __init__(self, encoder: nn.Module, heads: DualDomainHeads, built_with: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = heads
        self.built_with = built_with
        for p in self.encoder.parameters():  # frozen, as in the paper
            p.requires_grad_(False)

    @classmethod
    def build(cls, seed: int = 0, dims: PeerDims | None = None) -> PaperPeer:
        torch.manual_seed(seed)
        encoder, built_with = wav2vec2_base()
        return cls(encoder, DualDomainHeads(dims or PeerDims()), built_with).eval()

    def parameter_counts(self) -> dict[str, int]:
        return {
            "encoder": sum(p.numel() for p in self.encoder.parameters()),
            "heads": sum(p.numel() for p in self.heads.parameters()),
        }

    @torch.no_grad()
    def forward(self, audio: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        if audio.ndim != 2 or audio.shape[1] != WINDOW_SAMPLES:
            raise ValueError(
                f"audio must be (B, {WINDOW_SAMPLES}) at {SAMPLE_RATE_HZ} Hz, got {tuple(audio.shape)}"
            )
        if identity.shape[1:] != (N_LANDMARKS, 2):
            raise ValueError(f"identity must be (B, {N_LANDMARKS}, 2), got {tuple(identity.shape)}")
        # wav2vec2's processor normalises each window to zero mean, unit variance
        audio = (audio - audio.mean(1, keepdim=True)) / (audio.std(1, keepdim=True) + 1e-7)
        w2v = self.encoder(audio).last_hidden_state  # (B, 49, 768)
        return self.heads(w2v, identity)
