"""PyTorch counterpart of `benches/train.rs`: the same student (8 px patch convolution over a
64 px image, learned positions, 2 pre-norm encoder layers, 2 pre-norm prefix-LM decoder layers
in which the prefix rows are computed once per group and shared by its sequences,
d_model 128, 4 heads, ReLU MLP of ratio 4, vocabulary 1024), the same stage-2 step (4 groups of 1 + 7
sequences of 96 tokens sharing their image's prefix, summed completion log-probs, Plackett-Luce
loss against fixed reference log-probs, backward, global-norm clipping at 1, AdamW), on the CPU
with as many threads as cores. Prints one JSON line.

    python3 -m pip install torch && python3 crates/apo-train/benches/train_torch.py
"""

import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)
torch.set_num_threads(os.cpu_count() or 1)
D, H, V, IMG, PATCH, T, PROMPT, G, S = 128, 4, 1024, 64, 8, 96, 16, 4, 8
P = (IMG // PATCH) ** 2


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc1, self.fc2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

    def heads(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.n1(x)).split(D, dim=2)
        return (z.reshape(b, t, H, D // H).transpose(1, 2) for z in (q, k, v))

    def attend(self, q, k, v, bias=None):
        n, _, t, _ = q.shape
        s = q @ k.transpose(2, 3) / math.sqrt(D // H)
        if bias is not None:
            s = s + bias
        return (s.softmax(-1) @ v).transpose(1, 2).reshape(n, t, D)

    def mlp(self, x):
        return x + self.fc2(F.relu(self.fc1(self.n2(x))))

    def forward(self, x):
        q, k, v = self.heads(x)
        return self.mlp(x + self.proj(self.attend(q, k, v)))

    def shared(self, xp, xt, bias):
        # Prefix rows once per group; text rows attend to their group's prefix and earlier text.
        g, p, _ = xp.shape
        rows = xt.shape[0]
        s = rows // g
        qp, kp, vp = self.heads(xp)
        qt, kt, vt = self.heads(xt)
        op = self.attend(qp, kp, vp)
        rep = lambda z: z.unsqueeze(1).expand(g, s, H, p, D // H).reshape(rows, H, p, D // H)
        ot = self.attend(qt, torch.cat([rep(kp), kt], 2), torch.cat([rep(vp), vt], 2), bias)
        return self.mlp(xp + self.proj(op)), self.mlp(xt + self.proj(ot))


class Student(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(1, D, PATCH, stride=PATCH)
        self.pos = nn.Parameter(torch.randn(1, P, D) * 0.02)
        self.enc = nn.ModuleList([Block(), Block()])
        self.enc_norm = nn.LayerNorm(D)
        self.tok, self.tpos = nn.Embedding(V, D), nn.Embedding(T, D)
        self.dec = nn.ModuleList([Block(), Block()])
        self.norm, self.head = nn.LayerNorm(D), nn.Linear(D, V)

    def forward(self, images, tokens):
        g = images.shape[0]
        x = self.patch(images).flatten(2).transpose(1, 2) + self.pos
        for b in self.enc:
            x = b(x)
        xp = self.enc_norm(x)
        t = tokens.shape[1]
        xt = self.tok(tokens) + self.tpos(torch.arange(t))
        i = torch.arange(t).unsqueeze(1)
        j = torch.arange(P + t).unsqueeze(0)
        bias = torch.where((j >= P) & (j - P > i), -1e9, 0.0)
        for b in self.dec:
            xp, xt = b.shared(xp, xt, bias)
        return self.head(self.norm(xt))


def main():
    model = Student()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    images = torch.rand(32, 1, IMG, IMG) * 2 - 1
    seqs = torch.randint(4, V, (32, S, T))
    ref = torch.full((G, S), -500.0)
    beta = 0.1


    def step(k):
        idx = torch.tensor([(k * G + i) % 32 for i in range(G)])
        tokens = seqs[idx].reshape(G * S, T)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        logits = model(images[idx], inputs)
        lp = torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(2)).squeeze(2)
        mask = torch.arange(T - 1).unsqueeze(0) + 1 >= PROMPT
        seq = (lp * mask).sum(1).reshape(G, S)
        r = beta * (seq - ref)
        loss = (torch.logsumexp(r, 1) - r[:, 0]).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


    for k in range(3):
        step(k)
    times = []
    for k in range(3, 23):
        t = time.perf_counter()
        step(k)
        times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps({"bench": "torch-stage2", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "median_step_s": round(median, 4), "steps_per_s": round(1 / median, 3),
                      "completion_tokens_per_s": round(G * S * (T - PROMPT) / median)}))


if __name__ == "__main__":
    main()
