#!/usr/bin/env python3
"""PyTorch CPU twins of the default models (../shared/spec/models.md), timed beside `latent bench train`.

Issue 23's yardstick: one training step of each default model in PyTorch on the CPU (eager, float32), and the
same step in latent on the chosen adapter, measured by the same call on the same machine, so that the ratio
latent / PyTorch means something. Not part of `cargo test` (it needs PyTorch).

    python3 tests/torch_twins/steps.py                      # PyTorch only
    python3 tests/torch_twins/steps.py --latent target/release/latent   # and latent, with the ratio
    python3 tests/torch_twins/steps.py --model vae --model ddpm --json

A step is what latent's training step is: the batch already in memory (random, in the model's range), forward,
loss, backward, Adam (and the EMA for the ddpm), for the gan the D step then the G step. Median of --steps after
--warmup untimed steps; torch uses its default thread count (one per core).

On a shared machine whose speed comes and goes for seconds at a time (the development machine's did: one binary's
vae step read 23-37 ms a few calls apart), a single pair of measurements can land one side in a slow spell.
--repeat R measures each model's pair R times in turn and reports the median of the R ratios (and the medians
of each side's times).
"""

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

import torch
from torch import nn
import torch.nn.functional as F

# (model, batch) as issue 23's table: batch 128, the ddpm at batch 16.
DEFAULT_BATCH = {"vae": 128, "ae": 128, "gan": 128, "ddpm": 16, "classifier": 128}


class Ae(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(3136, 16))
        self.dec = nn.Sequential(
            nn.Linear(16, 3136), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)), nn.ConvTranspose2d(64, 32, 4, 2, 1),
            nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))

    def loss(self, x):
        logits = self.dec(self.enc(x))
        return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


class Vae(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def loss(self, x):
        x = x.view(-1, 784)
        h = F.relu(self.fc1(x))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = self.fc4(F.relu(self.fc3(z)))
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return (bce + kl) / x.shape[0]


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 6272)
        self.net = nn.Sequential(
            nn.BatchNorm2d(128), nn.ReLU(), nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z):
        return self.net(self.fc(z).view(-1, 128, 7, 7))


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128),
            nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(6272, 1))

    def forward(self, x):
        return self.net(x)


class ResBlock(nn.Module):
    def __init__(self, ci, co):
        super().__init__()
        self.n1, self.c1, self.t = nn.GroupNorm(8, ci), nn.Conv2d(ci, co, 3, 1, 1), nn.Linear(256, co)
        self.n2, self.c2 = nn.GroupNorm(8, co), nn.Conv2d(co, co, 3, 1, 1)
        self.skip = nn.Conv2d(ci, co, 1) if ci != co else None

    def forward(self, x, e):
        h = self.c1(F.silu(self.n1(x))) + self.t(e)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return h + (self.skip(x) if self.skip is not None else x)


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.te = nn.Sequential(nn.Linear(64, 256), nn.SiLU(), nn.Linear(256, 256))
        self.inc = nn.Conv2d(1, 64, 3, 1, 1)
        self.d1, self.ds1 = ResBlock(64, 64), nn.Conv2d(64, 64, 3, 2, 1)
        self.d2, self.ds2 = ResBlock(64, 128), nn.Conv2d(128, 128, 3, 2, 1)
        self.m1, self.m2 = ResBlock(128, 128), ResBlock(128, 128)
        self.u2, self.u1 = ResBlock(256, 128), ResBlock(192, 64)
        self.out_n, self.out = nn.GroupNorm(8, 64), nn.Conv2d(64, 1, 3, 1, 1)

    def forward(self, x, t):
        f = torch.exp(-math.log(10000) * torch.arange(32, dtype=torch.float32) / 32)
        arg = t.float()[:, None] * f[None, :]
        e = self.te(torch.cat([torch.sin(arg), torch.cos(arg)], dim=1))
        h1 = self.d1(self.inc(x), e)
        h2 = self.d2(self.ds1(h1), e)
        m = self.m2(self.m1(self.ds2(h2), e), e)
        u = self.u2(torch.cat([F.interpolate(m, scale_factor=2, mode="nearest"), h2], 1), e)
        u = self.u1(torch.cat([F.interpolate(u, scale_factor=2, mode="nearest"), h1], 1), e)
        return self.out(F.silu(self.out_n(u)))


class Ddpm(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = UNet()
        betas = torch.linspace(1e-4, 0.02, 1000)
        self.register_buffer("alpha_bar", torch.cumprod(1 - betas, 0))

    def loss(self, x):
        t = torch.randint(0, 1000, (x.shape[0],))
        eps = torch.randn_like(x)
        ab = self.alpha_bar[t][:, None, None, None]
        return F.mse_loss(self.net(ab.sqrt() * x + (1 - ab).sqrt() * eps, t), eps)


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 32, 3, 1, 1), nn.Conv2d(32, 64, 3, 1, 1)
        self.f1, self.f2 = nn.Linear(3136, 128), nn.Linear(128, 10)

    def loss(self, x, y):
        h = F.max_pool2d(F.relu(self.c1(x)), 2)
        h = F.max_pool2d(F.relu(self.c2(h)), 2).flatten(1)
        return F.cross_entropy(self.f2(F.relu(self.f1(h))), y)


def step_function(model, batch):
    """A closure doing one training step of `model` on a fixed random batch, and its parameter count."""
    x = torch.rand(batch, 1, 28, 28)
    if model in ("ae", "vae"):
        net = Ae() if model == "ae" else Vae()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            net.loss(x).backward()
            opt.step()
        return step, sum(p.numel() for p in net.parameters())
    if model == "classifier":
        net, y = Classifier(), torch.randint(0, 10, (batch,))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            net.loss(x, y).backward()
            opt.step()
        return step, sum(p.numel() for p in net.parameters())
    if model == "ddpm":
        net = Ddpm()
        ema = [p.detach().clone() for p in net.parameters()]
        opt = torch.optim.Adam(net.parameters(), lr=2e-4)
        x = x * 2 - 1

        def step():
            opt.zero_grad(set_to_none=True)
            net.loss(x).backward()
            opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in net.parameters()], 1 - 0.999)
        return step, sum(p.numel() for p in net.parameters())
    if model == "gan":
        g, d = Generator(), Discriminator()
        opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        x = x * 2 - 1
        ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)
        bce = F.binary_cross_entropy_with_logits

        def step():
            fake = g(torch.randn(batch, 64))
            opt_d.zero_grad(set_to_none=True)
            (bce(d(x), ones) + bce(d(fake.detach()), zeros)).backward()
            opt_d.step()
            opt_g.zero_grad(set_to_none=True)
            bce(d(fake), ones).backward()
            opt_g.step()
        params = sum(p.numel() for p in g.parameters()) + sum(p.numel() for p in d.parameters())
        return step, params
    raise SystemExit(f"unknown model {model!r}: choose from {', '.join(DEFAULT_BATCH)}")


def time_torch(model, batch, steps, warmup):
    torch.manual_seed(0)
    step, params = step_function(model, batch)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return {"params": params, "median_ms": statistics.median(times), "min_ms": min(times)}


def time_latent(binary, model, batch, steps):
    command = [binary, "bench", "train", "--model", model, "--batch", str(batch), "--json"]
    if steps:
        command += ["--steps", str(steps)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    result = report["results"][0]
    return {"adapter": report["adapter"], "median_ms": result["median_ms"], "min_ms": result["min_ms"]}


def median_of(results):
    """The medians of several timings of one side: median_ms and min_ms each the median over the calls."""
    results = list(results)
    merged = dict(results[0])
    for key in ("median_ms", "min_ms"):
        merged[key] = statistics.median(r[key] for r in results)
    if len(results) > 1:
        merged["calls"] = len(results)
    return merged


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="only these models (repeatable; default: all)")
    parser.add_argument("--steps", type=int, default=10, help="timed PyTorch steps per model (default 10)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--latent", metavar="BIN", help="also run `BIN bench train` per model and print the ratio")
    parser.add_argument("--latent-steps", type=int, default=0, help="--steps for latent (default: latent's own)")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of measurements per model (median ratio)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    models = args.model or list(DEFAULT_BATCH)
    rows = []
    print(f"PyTorch {torch.__version__} on the CPU, {torch.get_num_threads()} threads, "
          f"{torch.backends.cpu.get_cpu_capability()}", file=sys.stderr)
    for model in models:
        batch = DEFAULT_BATCH.get(model)
        if batch is None:
            raise SystemExit(f"unknown model {model!r}: choose from {', '.join(DEFAULT_BATCH)}")
        pairs = []
        for _ in range(max(args.repeat, 1)):
            pair = {"torch": time_torch(model, batch, args.steps, args.warmup)}
            if args.latent:
                pair["latent"] = time_latent(args.latent, model, batch, args.latent_steps)
            pairs.append(pair)
        row = {"model": model, "batch": batch, "torch": median_of(p["torch"] for p in pairs)}
        if args.latent:
            row["latent"] = median_of(p["latent"] for p in pairs)
            ratios = [p["latent"]["median_ms"] / p["torch"]["median_ms"] for p in pairs]
            row["ratio"] = statistics.median(ratios)
            if len(pairs) > 1:
                row["ratios"] = ratios
        rows.append(row)
        spread = ""
        if "ratios" in row:
            spread = f", {min(row['ratios']):.1f}-{max(row['ratios']):.1f}x over {len(row['ratios'])} pairs"
        print(f"{model}: PyTorch {row['torch']['median_ms']:.1f} ms"
              + (f", latent {row['latent']['median_ms']:.1f} ms ({row['ratio']:.1f}x{spread})" if args.latent else ""),
              file=sys.stderr)
    if args.json:
        print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}))
        return
    print(f"| training step | batch | PyTorch CPU eager | latent | latent / PyTorch |")
    print(f"| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        latent = f"{row['latent']['median_ms']:,.1f} ms" if "latent" in row else "-"
        ratio = f"{row['ratio']:.1f}x" if "ratio" in row else "-"
        if "ratios" in row:
            ratio += f" ({min(row['ratios']):.1f}-{max(row['ratios']):.1f}x)"
        print(f"| {row['model']} | {row['batch']} | {row['torch']['median_ms']:,.1f} ms | {latent} | {ratio} |")


if __name__ == "__main__":
    main()
