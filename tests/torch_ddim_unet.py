"""A PyTorch module with the structure and state-dict names of the references' DDPM UNet
(the DDIM code's ``Conditional_Model`` that SalUn and SFR-on train), written here from its
description for the parity tests of :mod:`jaxunlearn.convert.ddim_unet`. NCHW."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _gn(channels, groups):
  return nn.GroupNorm(groups, channels, eps=1e-6)


def _time_embedding(t, dim):
  half = dim // 2
  freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / (half - 1))
  angles = t.float()[:, None] * freqs[None]
  return torch.cat([angles.sin(), angles.cos()], dim=1)


class Block(nn.Module):
  def __init__(self, cin, cout, emb, dropout, groups):
    super().__init__()
    self.norm1, self.conv1 = _gn(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
    self.temb_cemb_proj = nn.Linear(emb, cout)
    self.norm2, self.dropout = _gn(cout, groups), nn.Dropout(dropout)
    self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
    if cin != cout:
      self.nin_shortcut = nn.Conv2d(cin, cout, 1)

  def forward(self, x, emb):
    h = self.conv1(F.silu(self.norm1(x))) + self.temb_cemb_proj(F.silu(emb))[:, :, None, None]
    h = self.conv2(self.dropout(F.silu(self.norm2(h))))
    return (self.nin_shortcut(x) if hasattr(self, 'nin_shortcut') else x) + h


class Attn(nn.Module):
  def __init__(self, c, groups):
    super().__init__()
    self.norm = _gn(c, groups)
    self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

  def forward(self, x):
    b, c, hgt, wid = x.shape
    h = self.norm(x)
    q = self.q(h).flatten(2).transpose(1, 2)  # b, hw, c
    k, v = self.k(h).flatten(2), self.v(h).flatten(2)  # b, c, hw
    w = torch.softmax(q @ k / math.sqrt(c), dim=-1)  # b, hw(q), hw(k)
    out = (v @ w.transpose(1, 2)).reshape(b, c, hgt, wid)
    return x + self.proj_out(out)


class Down(nn.Module):
  def __init__(self, channels):
    super().__init__()
    self.conv = nn.Conv2d(channels, channels, 3, stride=2)

  def forward(self, x):
    return self.conv(F.pad(x, (0, 1, 0, 1)))


class Up(nn.Module):
  def __init__(self, channels):
    super().__init__()
    self.conv = nn.Conv2d(channels, channels, 3, padding=1)

  def forward(self, x):
    return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class RefUNet(nn.Module):
  """``forward(x, t, c, null)``: ``null`` [B] bools replace the class embedding by the
  learned null vector (the references' guidance / label dropout)."""

  def __init__(self, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
               resolution=8, num_classes=10, in_channels=1, out_ch=1, dropout=0.1, groups=8):
    super().__init__()
    self.ch, self.nres, self.levels = ch, num_res_blocks, len(ch_mult)
    emb = 4 * ch
    self.temb = nn.Module()
    self.temb.dense = nn.ModuleList([nn.Linear(ch, emb), nn.Linear(emb, emb)])
    self.classes_emb = nn.Embedding(num_classes, ch)
    self.null_classes_emb = nn.Parameter(torch.randn(ch))
    self.cemb = nn.Module()
    self.cemb.dense = nn.ModuleList([nn.Linear(ch, emb), nn.Linear(emb, emb)])
    self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
    side, mult_in, cin = resolution, (1,) + tuple(ch_mult), ch
    self.down = nn.ModuleList()
    for i, m in enumerate(ch_mult):
      level = nn.Module()
      level.block, level.attn = nn.ModuleList(), nn.ModuleList()
      cin = ch * mult_in[i]
      for _ in range(num_res_blocks):
        level.block.append(Block(cin, ch * m, 2 * emb, dropout, groups))
        cin = ch * m
        if side in attn_resolutions:
          level.attn.append(Attn(cin, groups))
      if i != len(ch_mult) - 1:
        level.downsample = Down(cin)
        side //= 2
      self.down.append(level)
    self.mid = nn.Module()
    self.mid.block_1 = Block(cin, cin, 2 * emb, dropout, groups)
    self.mid.attn_1 = Attn(cin, groups)
    self.mid.block_2 = Block(cin, cin, 2 * emb, dropout, groups)
    ups = []
    for i in reversed(range(len(ch_mult))):
      level = nn.Module()
      level.block, level.attn = nn.ModuleList(), nn.ModuleList()
      for j in range(num_res_blocks + 1):
        skip = ch * (mult_in[i] if j == num_res_blocks else ch_mult[i])
        level.block.append(Block(cin + skip, ch * ch_mult[i], 2 * emb, dropout, groups))
        cin = ch * ch_mult[i]
        if side in attn_resolutions:
          level.attn.append(Attn(cin, groups))
      if i != 0:
        level.upsample = Up(cin)
        side *= 2
      ups.insert(0, level)
    self.up = nn.ModuleList(ups)
    self.norm_out = _gn(cin, groups)
    self.conv_out = nn.Conv2d(cin, out_ch, 3, padding=1)

  def forward(self, x, t, c, null):
    temb = self.temb.dense[1](F.silu(self.temb.dense[0](_time_embedding(t, self.ch))))
    cemb = torch.where(null[:, None], self.null_classes_emb[None], self.classes_emb(c))
    cemb = self.cemb.dense[1](F.silu(self.cemb.dense[0](cemb)))
    emb = torch.cat([temb, cemb], dim=-1)
    hs = [self.conv_in(x)]
    for i, level in enumerate(self.down):
      for j in range(self.nres):
        h = level.block[j](hs[-1], emb)
        if len(level.attn):
          h = level.attn[j](h)
        hs.append(h)
      if i != self.levels - 1:
        hs.append(level.downsample(hs[-1]))
    h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], emb)), emb)
    for i in reversed(range(self.levels)):
      level = self.up[i]
      for j in range(self.nres + 1):
        h = level.block[j](torch.cat([h, hs.pop()], dim=1), emb)
        if len(level.attn):
          h = level.attn[j](h)
      if i != 0:
        h = level.upsample(h)
    return self.conv_out(F.silu(self.norm_out(h)))


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
  """Every parameter redrawn (norm scales and biases too), so no zero-initialised or
  identity part hides a wrong mapping."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(p[0].numel(), 1)))
  return module
