"""How many steps before a from-scratch student's text depends on the image? A PyTorch replica
of the student of `train_torch.py` trained with plain next-token cross-entropy on the consensus
trajectories of an `apo demo` run (the cleanest text there is: one trajectory per image), with
and without the image summary path (`model.image_summary`: a projection of the mean prefix
vector added to every text embedding). Every 50 steps it prints the validation loss per token
with each image's own picture and with the pictures shifted by one (another image): the gap is
how much the text depends on the image. Word-level tokens; 700 training, the rest validation.

    python3 crates/apo-train/benches/grounding_torch.py runs/demo 1000 16 1e-3 summary
    python3 crates/apo-train/benches/grounding_torch.py runs/demo 1000 16 1e-3 none
    python3 crates/apo-train/benches/grounding_torch.py runs/demo 300 16 1e-3 classifier

`classifier` is the control: the same image encoder, mean-pooled, with a linear head trained
with binary cross-entropy on the ground-truth labels of the five Table 1 findings (train split;
accuracy on the test split every 50 steps, as the demo scores it): how learnable the pictures
are when the signal does not have to pass through text.

RUN is a demo run folder (its `data/` and `prefs.jsonl` are read); needs torch and Pillow.
"""

import csv
import gzip
import json
import math
import os
import re
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_torch import Block, D, H  # noqa: E402  (the same layer as the benchmark's student)

RUN, STEPS, BATCH, LR, VARIANT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
torch.manual_seed(0)
torch.set_num_threads(os.cpu_count() or 1)
IMG, PATCH, T = 64, 8, 128
P = (IMG // PATCH) ** 2


class Student(nn.Module):
    def __init__(self, vocab, summary):
        super().__init__()
        self.patch = nn.Conv2d(1, D, PATCH, stride=PATCH)
        self.pos = nn.Parameter(torch.randn(1, P, D) * 0.02)
        self.enc = nn.ModuleList([Block(), Block()])
        self.enc_norm = nn.LayerNorm(D)
        self.tok, self.tpos = nn.Embedding(vocab, D), nn.Embedding(T, D)
        self.dec = nn.ModuleList([Block(), Block()])
        self.norm, self.head = nn.LayerNorm(D), nn.Linear(D, vocab)
        self.summary = nn.Linear(D, D) if summary else None

    def forward(self, images, tokens):
        x = self.patch(images).flatten(2).transpose(1, 2) + self.pos
        for b in self.enc:
            x = b(x)
        xp = self.enc_norm(x)
        t = tokens.shape[1]
        xt = self.tok(tokens) + self.tpos(torch.arange(t))
        if self.summary is not None:
            xt = xt + self.summary(xp.mean(1)).unsqueeze(1)
        i, j = torch.arange(t).unsqueeze(1), torch.arange(P + t).unsqueeze(0)
        bias = torch.where((j >= P) & (j - P > i), -1e9, 0.0)
        for b in self.dec:
            xp, xt = b.shared(xp, xt, bias)  # one sequence per image
        return self.head(self.norm(xt))


def classifier():
    findings = ["Consolidation", "Pleural Effusion", "Pneumonia", "Pneumothorax", "Edema"]
    labels, split, pics = {}, {}, {}
    with gzip.open(os.path.join(data, "mimic-cxr-2.0.0-chexpert.csv.gz"), "rt") as f:
        for r in csv.DictReader(f):
            labels[r["study_id"]] = [{"1.0": 1.0, "-1.0": -1.0}.get(r[c], 0.0) for c in findings]
    with gzip.open(os.path.join(data, "mimic-cxr-2.0.0-split.csv.gz"), "rt") as f:
        for r in csv.DictReader(f):
            split[r["dicom_id"]] = (r["study_id"], r["split"])
    ids = sorted(split)
    X = torch.tensor(np.stack([np.asarray(Image.open(paths[i]).convert("L").resize((IMG, IMG)),
                                          dtype=np.float32) / 127.5 - 1 for i in ids]))[:, None]
    Y = torch.tensor([labels[split[i][0]] for i in ids])
    kind = np.array([split[i][1] for i in ids])
    tr, te = torch.tensor(np.where(kind == "train")[0]), torch.tensor(np.where(kind == "test")[0])
    enc = Student(8, False)
    head = nn.Linear(D, len(findings))

    def logits(x):
        z = enc.patch(x).flatten(2).transpose(1, 2) + enc.pos
        for b in enc.enc:
            z = b(z)
        return head(enc.enc_norm(z).mean(1))

    params = list(enc.patch.parameters()) + [enc.pos] + list(enc.enc.parameters()) + \
        list(enc.enc_norm.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    for step in range(STEPS):
        b = tr[torch.randint(len(tr), (BATCH,), generator=g)]
        y = Y[b]
        known = (y >= 0).float()
        value = (F.binary_cross_entropy_with_logits(logits(X[b]), y.clamp(min=0), reduction="none") * known).mean()
        opt.zero_grad()
        value.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            with torch.no_grad():
                pred, y = (logits(X[te]) > 0).float(), Y[te]
                acc = (((pred == y) & (y >= 0)).float().sum(0) / (y >= 0).float().sum(0)).tolist()
            print(json.dumps({"step": step + 1, "variant": "classifier",
                              "test_accuracy": dict(zip(findings, [round(a, 3) for a in acc])),
                              "mean": round(sum(acc) / len(acc), 3)}), flush=True)
    sys.exit(0)


data = os.path.join(RUN, "data")
paths = {}
with gzip.open(os.path.join(data, "mimic-cxr-2.0.0-split.csv.gz"), "rt") as f:
    for r in csv.DictReader(f):
        s, p = r["study_id"], r["subject_id"]
        paths[r["dicom_id"]] = os.path.join(data, "files", f"p{p[:2]}", f"p{p}", f"s{s}", r["dicom_id"] + ".jpg")
if VARIANT == "classifier":
    classifier()
rows = [json.loads(line) for line in open(os.path.join(RUN, "prefs.jsonl"))]
words = lambda s: re.findall(r"\w+|[^\w\s]|\n", s)
vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2}
for r in rows:
    for w in words(r["chosen"]):
        vocab.setdefault(w, len(vocab))
images, seqs = [], []
for r in rows:
    im = Image.open(paths[r["id"]]).convert("L").resize((IMG, IMG))
    images.append(np.asarray(im, dtype=np.float32) / 127.5 - 1)
    seqs.append(([1] + [vocab[w] for w in words(r["chosen"])] + [2])[:T])
L = max(len(s) for s in seqs)
Y = torch.zeros(len(seqs), L, dtype=torch.long)
for i, s in enumerate(seqs):
    Y[i, : len(s)] = torch.tensor(s)
X = torch.tensor(np.stack(images))[:, None]
train, val = torch.arange(0, 700), torch.arange(700, len(X))
model = Student(len(vocab), VARIANT == "summary")
opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)


def loss(img, txt):
    logits = model(X[img], Y[txt, :-1])
    return F.cross_entropy(logits.reshape(-1, len(vocab)), Y[txt, 1:].reshape(-1), ignore_index=0)


g = torch.Generator().manual_seed(0)
for step in range(STEPS):
    batch = train[torch.randint(len(train), (BATCH,), generator=g)]
    lr = LR * min(1.0, (step + 1) / 15) * 0.5 * (1 + math.cos(math.pi * step / STEPS))
    for group in opt.param_groups:
        group["lr"] = lr
    value = loss(batch, batch)
    opt.zero_grad()
    value.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if (step + 1) % 50 == 0:
        with torch.no_grad():
            own, other = loss(val, val).item(), loss(val.roll(1), val).item()
        print(json.dumps({"step": step + 1, "variant": VARIANT, "val_own_image": round(own, 4),
                          "val_other_image": round(other, 4), "gap": round(other - own, 4)}), flush=True)
