"""VAAL's networks and the training that scores the candidates (torch; `pipeline.selection.vaal`
cites the paper and says where this differs from the authors' code).

Imported only when a `vaal` arm selects, so that loading the strategy registry (validating
params.yaml) never imports torch.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BATCH = 64
LR = 5e-4
BETA = 1.0
ADVERSARY = 1.0


class VAE(nn.Module):
    """x [B, 3, H, W] → (reconstruction [B, 3, H, W], μ [B, z], log σ² [B, z])."""

    def __init__(self, side: int, latent: int) -> None:
        super().__init__()
        enc: list[nn.Module] = []
        dec: list[nn.Module] = []
        c_in, s, widths = 3, side, []
        while s > 4 or not widths:
            c_out = min(256, 32 * 2 ** len(widths))
            enc += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
            widths.append(c_out)
            c_in, s = c_out, s // 2
        self.side, self.inner, self.channels = side, s, c_in
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.fc_mu = nn.Linear(c_in * s * s, latent)
        self.fc_logvar = nn.Linear(c_in * s * s, latent)
        self.fc_dec = nn.Linear(latent, c_in * s * s)
        for c_out in reversed([3] + widths[:-1]):  # mirrored; the last layer gives the 3 channels
            dec += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=c_out == 3)]
            if c_out != 3:
                dec += [nn.BatchNorm2d(c_out), nn.ReLU(True)]
            c_in = c_out
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        h = self.fc_dec(z).reshape(-1, self.channels, self.inner, self.inner)
        recon = self.decoder(h)
        if recon.shape[-2:] != x.shape[-2:]:
            recon = F.interpolate(recon, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return recon, mu, logvar


class Discriminator(nn.Module):
    """μ [B, z] → P(labeled) [B]."""

    def __init__(self, latent: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = latent
        for _ in range(4):
            layers += [nn.Linear(width, 512), nn.ReLU(True)]
            width = 512
        self.net = nn.Sequential(*layers, nn.Linear(512, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z)).reshape(-1)


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """MSE + β·KL, as the authors' `vae_loss` (KL summed over the batch and latent)."""
    return F.mse_loss(recon, x) + BETA * (-0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()))


def _cycle(images: Any, ids: np.ndarray, seed: int) -> Iterator[torch.Tensor]:
    epoch = 0
    while True:
        for _, x in images.batches(ids, batch_size=BATCH, shuffle=True, seed=seed, epoch=epoch):
            yield x
        epoch += 1


def vaal_scores(images: Any, cand_ids: np.ndarray, labeled_ids: np.ndarray, *, epochs: int, latent: int,
                seed: int) -> np.ndarray:
    """[n] 1 − D(μ(x)) of the candidates cand_ids [n] (in that order) after training a VAE and
    a discriminator on them and the labeled labeled_ids [m]."""
    device = images.device
    with torch.random.fork_rng(devices=[] if torch.device(device).type == "cpu" else [torch.device(device)]):
        torch.manual_seed(int(seed) % (2**63))
        first = next(iter(images.batches(cand_ids[:1], batch_size=1)))[1]
        vae = VAE(int(first.shape[-1]), latent).to(device)
        disc = Discriminator(latent).to(device)
        opt_v = torch.optim.Adam(vae.parameters(), lr=LR)
        opt_d = torch.optim.Adam(disc.parameters(), lr=LR)
        bce = nn.BCELoss()
        labeled = _cycle(images, labeled_ids, seed + 1)
        vae.train()
        disc.train()
        for epoch in range(epochs):
            for _, xu in images.batches(cand_ids, batch_size=BATCH, shuffle=True, seed=seed, epoch=epoch):
                xl = next(labeled)
                recon_l, mu_l, logvar_l = vae(xl)
                recon_u, mu_u, logvar_u = vae(xu)
                adv = bce(disc(mu_l), torch.ones(len(xl), device=device)) + \
                    bce(disc(mu_u), torch.ones(len(xu), device=device))
                loss = vae_loss(xl, recon_l, mu_l, logvar_l) + vae_loss(xu, recon_u, mu_u, logvar_u) + ADVERSARY * adv
                opt_v.zero_grad(set_to_none=True)
                loss.backward()
                opt_v.step()
                with torch.no_grad():
                    mu_l, _ = vae.encode(xl)
                    mu_u, _ = vae.encode(xu)
                d_loss = bce(disc(mu_l), torch.ones(len(xl), device=device)) + \
                    bce(disc(mu_u), torch.zeros(len(xu), device=device))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
        vae.eval()
        disc.eval()
        out = {}
        with torch.no_grad():
            for ids, x in images.batches(cand_ids, batch_size=512):
                mu, _ = vae.encode(x)
                out.update(zip(ids.tolist(), (1.0 - disc(mu)).double().cpu().numpy().tolist()))
    return np.array([out[int(i)] for i in cand_ids], dtype=np.float64)
