"""Denoiser networks for edge-sample.

SeedUNet follows the architecture of the seed tutorial author's DDPM demo
("unet_res_cfg": channels 10/20/40/80, sinusoidal table of width 128,
residual blocks with LayerNorm over (C,H,W), no attention).  Written from the
architecture description, not copied.

FashionUNet is a stronger (but still small) net: GroupNorm + SiLU residual
blocks, timestep embedding injected per block, self-attention at 7x7.

Both take x float [N,C,H,W] and t int64 [N,1] (or [N]) and return eps of x's
shape.  The sinusoidal table is a frozen buffer looked up by t, so it exports
as a Gather in ONNX.  The per-block timestep projections are nn.Linear (Gemm).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def sinusoidal_table(n_steps: int, dim: int) -> torch.Tensor:
    """Row t: [sin(t/10000^(2i/d)), cos(t/10000^(2i/d))] interleaved (i = 0..d/2-1)."""
    assert dim % 2 == 0, "pe_dim must be even"
    pos = torch.arange(n_steps, dtype=torch.float64).unsqueeze(1)      # [T,1]
    two_i = torch.arange(0, dim, 2, dtype=torch.float64).unsqueeze(0)   # [1,d/2]
    ang = pos / torch.pow(10000.0, two_i / dim)
    pe = torch.stack((torch.sin(ang), torch.cos(ang)), dim=2).reshape(n_steps, dim)
    return pe.float()


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal table looked up by integer t (frozen embedding -> Gather)."""

    def __init__(self, n_steps: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_steps, dim)
        self.embedding.weight.data.copy_(sinusoidal_table(n_steps, dim))
        self.embedding.requires_grad_(False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # t: [N,1] or [N] int64 -> [N, dim]
        return self.embedding(t.reshape(-1))


# --------------------------------------------------------------------------
# Seed UNet
# --------------------------------------------------------------------------
class SeedBlock(nn.Module):
    """LayerNorm(C,H,W) -> conv3x3 -> ReLU -> conv3x3 (+ residual) -> ReLU."""

    def __init__(self, shape, in_c: int, out_c: int, residual: bool):
        super().__init__()
        self.ln = nn.LayerNorm(shape)
        self.conv1 = nn.Conv2d(in_c, out_c, 3, 1, 1)
        self.conv2 = nn.Conv2d(out_c, out_c, 3, 1, 1)
        self.act = nn.ReLU()
        self.residual = residual
        if residual:
            self.skip = nn.Identity() if in_c == out_c else nn.Conv2d(in_c, out_c, 1)

    def forward(self, x):
        h = self.ln(x)
        h = self.act(self.conv1(h))
        h = self.conv2(h)
        if self.residual:
            h = h + self.skip(x)
        return self.act(h)


class SeedUNet(nn.Module):
    def __init__(self, n_steps=1000, channels=(10, 20, 40, 80), pe_dim=128,
                 residual=True, img_shape=(1, 28, 28)):
        super().__init__()
        C, H, W = img_shape
        self.config = dict(arch="SeedUNet", n_steps=n_steps, channels=list(channels),
                           pe_dim=pe_dim, residual=residual, img_shape=list(img_shape))
        n_levels = len(channels)
        Hs, Ws = [H], [W]
        for _ in range(n_levels - 1):
            Hs.append(Hs[-1] // 2)
            Ws.append(Ws[-1] // 2)

        self.pe = PositionalEncoding(n_steps, pe_dim)
        self.pe_linears_en = nn.ModuleList()
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        prev = C
        for ch, h, w in zip(channels[:-1], Hs[:-1], Ws[:-1]):
            self.pe_linears_en.append(nn.Sequential(
                nn.Linear(pe_dim, prev), nn.ReLU(), nn.Linear(prev, prev)))
            self.encoders.append(nn.Sequential(
                SeedBlock((prev, h, w), prev, ch, residual),
                SeedBlock((ch, h, w), ch, ch, residual)))
            self.downs.append(nn.Conv2d(ch, ch, 2, 2))
            prev = ch

        self.pe_mid = nn.Linear(pe_dim, prev)
        ch = channels[-1]
        self.mid = nn.Sequential(
            SeedBlock((prev, Hs[-1], Ws[-1]), prev, ch, residual),
            SeedBlock((ch, Hs[-1], Ws[-1]), ch, ch, residual))
        prev = ch

        self.pe_linears_de = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        # static pads (left, right, top, bottom) after each ConvTranspose: 6 -> 7 at 28x28
        self.pads = []
        for lvl, (ch, h, w) in enumerate(zip(channels[-2::-1], Hs[-2::-1], Ws[-2::-1])):
            dh, dw = h - 2 * Hs[-1 - lvl], w - 2 * Ws[-1 - lvl]
            self.pads.append((dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
            # the embedding is added after the skip concatenation (2*ch channels)
            self.pe_linears_de.append(nn.Linear(pe_dim, 2 * ch))
            self.ups.append(nn.ConvTranspose2d(prev, ch, 2, 2))
            self.decoders.append(nn.Sequential(
                SeedBlock((2 * ch, h, w), 2 * ch, ch, residual),
                SeedBlock((ch, h, w), ch, ch, residual)))
            prev = ch
        self.conv_out = nn.Conv2d(prev, C, 3, 1, 1)

    def forward(self, x, t):
        # shapes are Python constants here so the ONNX graph has no Shape/Gather
        # arithmetic: [:, :, None, None] exports as Unsqueeze, pads as a constant Pad.
        emb = self.pe(t)
        skips = []
        for lin, enc, down in zip(self.pe_linears_en, self.encoders, self.downs):
            x = enc(x + lin(emb)[:, :, None, None])
            skips.append(x)
            x = down(x)
        x = self.mid(x + self.pe_mid(emb)[:, :, None, None])
        for lin, dec, up, skip, pad in zip(self.pe_linears_de, self.decoders, self.ups,
                                           skips[::-1], self.pads):
            x = up(x)
            if any(pad):
                x = F.pad(x, pad)
            x = torch.cat((skip, x), dim=1)
            x = dec(x + lin(emb)[:, :, None, None])
        return self.conv_out(x)


# --------------------------------------------------------------------------
# Fashion UNet (GroupNorm, SiLU, attention at 7x7)
# --------------------------------------------------------------------------
class StaticGroupNorm(nn.GroupNorm):
    """nn.GroupNorm whose ONNX export has constant shapes: Reshape(-1,G,L) ->
    InstanceNormalization -> Reshape(-1,C,H,W) -> Mul/Add (opset 17 has no
    GroupNormalization; torch's own export computes the shapes with Shape ops)."""

    def __init__(self, groups: int, c: int, hw):
        super().__init__(groups, c)
        self.h, self.w = hw
        # explicit unit scale / zero shift so the exporter needs no channel count
        self.register_buffer("_one", torch.ones(groups), persistent=False)
        self.register_buffer("_zero", torch.zeros(groups), persistent=False)

    def forward(self, x):
        g, c = self.num_groups, self.num_channels
        y = F.instance_norm(x.reshape(-1, g, (c // g) * self.h * self.w), weight=self._one,
                            bias=self._zero, eps=self.eps)
        y = y.reshape(-1, c, self.h, self.w)
        return y * self.weight[:, None, None] + self.bias[:, None, None]


def _gn(c: int, hw) -> nn.GroupNorm:
    g = 8
    while c % g:
        g //= 2
    return StaticGroupNorm(g, c, hw)


class ResBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, emb_dim: int, hw, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _gn(in_c, hw)
        self.conv1 = nn.Conv2d(in_c, out_c, 3, 1, 1)
        self.emb = nn.Linear(emb_dim, out_c)
        self.norm2 = _gn(out_c, hw)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_c, out_c, 3, 1, 1)
        self.skip = nn.Identity() if in_c == out_c else nn.Conv2d(in_c, out_c, 1)

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return h + self.skip(x)


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions (used at 7x7)."""

    def __init__(self, c: int, hw):
        super().__init__()
        self.c, self.h, self.w = c, hw[0], hw[1]  # static shapes -> constant Reshapes in ONNX
        self.norm = _gn(c, hw)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        self.scale = 1.0 / math.sqrt(c)

    def forward(self, x):
        c, h, w = self.c, self.h, self.w
        q, k, v = self.qkv(self.norm(x)).reshape(-1, 3, c, h * w).unbind(1)
        a = torch.softmax(torch.matmul(q.transpose(1, 2), k) * self.scale, dim=-1)  # [n,hw,hw]
        o = torch.matmul(v, a.transpose(1, 2)).reshape(-1, c, h, w)
        return x + self.proj(o)


class FashionUNet(nn.Module):
    """28 -> 14 -> 7 UNet, 2 res blocks per level, attention at 7x7 (and in the middle)."""

    def __init__(self, n_steps=1000, channels=(32, 64, 96), pe_dim=128, emb_dim=256,
                 img_shape=(1, 28, 28), attn_levels=(2,), dropout=0.1):
        super().__init__()
        C, H, W = img_shape
        self.config = dict(arch="FashionUNet", n_steps=n_steps, channels=list(channels),
                           pe_dim=pe_dim, emb_dim=emb_dim, img_shape=list(img_shape),
                           attn_levels=list(attn_levels), dropout=dropout)
        Hs = [(H >> i, W >> i) for i in range(len(channels))]  # 28, 14, 7
        self.pe = PositionalEncoding(n_steps, pe_dim)
        self.temb = nn.Sequential(nn.Linear(pe_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(C, channels[0], 3, 1, 1)
        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downs = nn.ModuleList()
        skip_ch = [channels[0]]
        prev = channels[0]
        for lvl, ch in enumerate(channels):
            for _ in range(2):
                self.down_blocks.append(ResBlock(prev, ch, emb_dim, Hs[lvl], dropout))
                self.down_attn.append(AttnBlock(ch, Hs[lvl]) if lvl in attn_levels else nn.Identity())
                prev = ch
                skip_ch.append(ch)
            if lvl < len(channels) - 1:
                self.downs.append(nn.Conv2d(ch, ch, 3, 2, 1))  # 28->14->7
                skip_ch.append(ch)
        self.mid1 = ResBlock(prev, prev, emb_dim, Hs[-1], dropout)
        self.mid_attn = AttnBlock(prev, Hs[-1])
        self.mid2 = ResBlock(prev, prev, emb_dim, Hs[-1], dropout)
        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.ups = nn.ModuleList()
        for lvl in reversed(range(len(channels))):
            ch = channels[lvl]
            for _ in range(3):
                self.up_blocks.append(ResBlock(prev + skip_ch.pop(), ch, emb_dim, Hs[lvl], dropout))
                self.up_attn.append(AttnBlock(ch, Hs[lvl]) if lvl in attn_levels else nn.Identity())
                prev = ch
            if lvl > 0:
                self.ups.append(nn.ConvTranspose2d(ch, ch, 2, 2))  # 7->14->28 (even sizes)
        self.norm_out = _gn(prev, Hs[0])
        self.conv_out = nn.Conv2d(prev, C, 3, 1, 1)
        self.n_levels = len(channels)

    def forward(self, x, t):
        emb = self.temb(self.pe(t))
        h = self.conv_in(x)
        hs = [h]
        i = 0
        for lvl in range(self.n_levels):
            for _ in range(2):
                h = self.down_attn[i](self.down_blocks[i](h, emb))
                hs.append(h)
                i += 1
            if lvl < self.n_levels - 1:
                h = self.downs[lvl](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        i = 0
        for k, lvl in enumerate(reversed(range(self.n_levels))):
            for _ in range(3):
                h = torch.cat((h, hs.pop()), dim=1)
                h = self.up_attn[i](self.up_blocks[i](h, emb))
                i += 1
            if lvl > 0:
                h = self.ups[k](h)
        return self.conv_out(F.silu(self.norm_out(h)))


ARCHS = {"SeedUNet": SeedUNet, "FashionUNet": FashionUNet}


def build(config: dict) -> nn.Module:
    cfg = dict(config)
    arch = cfg.pop("arch")
    for k in ("channels", "img_shape", "attn_levels"):
        if k in cfg:
            cfg[k] = tuple(cfg[k])
    return ARCHS[arch](**cfg)


def count_params(m: nn.Module, trainable_only=True) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable_only)


if __name__ == "__main__":
    gn, ref = StaticGroupNorm(4, 8, (5, 6)), nn.GroupNorm(4, 8)
    nn.init.normal_(gn.weight), nn.init.normal_(gn.bias)
    ref.load_state_dict(gn.state_dict())
    xx = torch.randn(3, 8, 5, 6)
    assert torch.allclose(gn(xx), ref(xx), atol=1e-5)
    for m in (SeedUNet(), SeedUNet(channels=(4, 8, 16, 32)), FashionUNet()):
        x = torch.randn(2, 1, 28, 28)
        t = torch.tensor([[3], [999]], dtype=torch.int64)
        y = m(x, t)
        assert y.shape == x.shape
        print(m.config["arch"], m.config["channels"], "trainable", count_params(m),
              "all", count_params(m, False))
