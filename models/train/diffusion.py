"""DDPM schedule and reference samplers (the seed tutorial's formulas), torch."""
import torch

T = 1000
BETA_START = 1e-4
BETA_END = 0.02


class Schedule:
    def __init__(self, n_steps=T, beta_start=BETA_START, beta_end=BETA_END, device="cpu"):
        self.n_steps = n_steps
        self.betas = torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float32, device=device)
        self.alphas = 1.0 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, 0)
        ab_prev = torch.cat([torch.ones(1, device=device), self.alpha_bars[:-1]])
        self.alpha_bars_prev = ab_prev
        self.coef1 = torch.sqrt(self.alphas) * (1 - ab_prev) / (1 - self.alpha_bars)
        self.coef2 = torch.sqrt(ab_prev) * self.betas / (1 - self.alpha_bars)

    def q_sample(self, x0, t, eps):
        """x_t = sqrt(ab_t) x0 + sqrt(1-ab_t) eps; t int64 [N]."""
        ab = self.alpha_bars[t].reshape(-1, 1, 1, 1)
        return torch.sqrt(ab) * x0 + torch.sqrt(1 - ab) * eps


@torch.no_grad()
def ddpm_sample(net, sched: Schedule, shape, generator=None, device="cpu",
                simple_var=True, clip_x0=True):
    """The seed's 1000-step ancestral sampler."""
    x = torch.randn(shape, generator=generator, device=device)
    n = shape[0]
    for t in range(sched.n_steps - 1, -1, -1):
        tt = torch.full((n, 1), t, dtype=torch.int64, device=device)
        eps = net(x, tt)
        if clip_x0:
            x0 = ((x - torch.sqrt(1 - sched.alpha_bars[t]) * eps) / torch.sqrt(sched.alpha_bars[t])).clamp(-1, 1)
            mean = sched.coef1[t] * x + sched.coef2[t] * x0
        else:
            mean = (x - (1 - sched.alphas[t]) / torch.sqrt(1 - sched.alpha_bars[t]) * eps) / torch.sqrt(sched.alphas[t])
        if t > 0:
            var = sched.betas[t] if simple_var else (1 - sched.alpha_bars_prev[t]) / (1 - sched.alpha_bars[t]) * sched.betas[t]
            x = mean + torch.sqrt(var) * torch.randn(shape, generator=generator, device=device)
        else:
            x = mean
    return x


@torch.no_grad()
def ddim_sample(net, sched: Schedule, shape, steps=50, eta=0.0, generator=None, device="cpu"):
    """DDIM with 'leading' spacing (diffusers default), final alpha_bar_prev = 1."""
    x = torch.randn(shape, generator=generator, device=device)
    n = shape[0]
    ts = list(range(0, sched.n_steps, sched.n_steps // steps))[::-1]
    for i, t in enumerate(ts):
        ab = sched.alpha_bars[t]
        ab_p = sched.alpha_bars[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, device=device)
        eps = net(x, torch.full((n, 1), t, dtype=torch.int64, device=device))
        x0 = ((x - torch.sqrt(1 - ab) * eps) / torch.sqrt(ab)).clamp(-1, 1)
        eps = (x - torch.sqrt(ab) * x0) / torch.sqrt(1 - ab)
        sigma = eta * torch.sqrt((1 - ab_p) / (1 - ab)) * torch.sqrt(1 - ab / ab_p)
        x = torch.sqrt(ab_p) * x0 + torch.sqrt((1 - ab_p - sigma ** 2).clamp(min=0)) * eps
        if eta > 0 and i + 1 < len(ts):
            x = x + sigma * torch.randn(shape, generator=generator, device=device)
    return x
