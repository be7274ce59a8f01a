#!/usr/bin/env python3
"""Writes the GPU workload of xtask/gpu/device-check.sh from a simulated data set and its
preference sets: the first preference group of the train split with at least N negatives, each
of its 1 + N completions repeated sentence by sentence until it has about TOKENS tokens under
TOKENIZER (a tokenizer.json), as

    GROUP/prefs.jsonl   that one group (id, prompt, chosen, N rejected)  -> apo train apo
    GROUP/score.jsonl   its 1 + N rows {"images": ["image.jpg"], "prompt", "completion"}
    GROUP/image.jpg     the group's image (a copy)

    make_group.py DATA PREFS TOKENIZER GROUP [--tokens 960] [--negatives 7]

Prints one JSON line."""

import argparse
import glob
import gzip
import json
import os
import shutil

from tokenizers import Tokenizer

ap = argparse.ArgumentParser()
ap.add_argument("data")
ap.add_argument("prefs")
ap.add_argument("tokenizer")
ap.add_argument("group")
ap.add_argument("--tokens", type=int, default=960)
ap.add_argument("--negatives", type=int, default=7)
args = ap.parse_args()
tok = Tokenizer.from_file(args.tokenizer)

splits = {}
for path in glob.glob(os.path.join(args.data, "**", "*split*.csv*"), recursive=True):
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
        header = f.readline().strip().split(",")
        for line in f:
            cells = dict(zip(header, line.strip().split(",")))
            splits[cells.get("dicom_id")] = cells.get("split")

row = None
for line in open(args.prefs):
    r = json.loads(line)
    if len(r["rejected"]) >= args.negatives and splits.get(r["id"], "train") == "train":
        row = r
        break
if row is None:
    raise SystemExit(f"{args.prefs}: no train-split group with {args.negatives} negatives")
row["rejected"] = row["rejected"][: args.negatives]


def lengthen(text):
    sentences = [s.strip() + "." for s in text.replace("\n", " ").split(".") if s.strip()] or [text]
    out, k = "", 0
    while len(tok.encode(out).ids) < args.tokens:
        out = (out + " " + sentences[k % len(sentences)]).strip()
        k += 1
    return out


row["chosen"] = lengthen(row["chosen"])
for r in row["rejected"]:
    r["text"] = lengthen(r["text"])
images = [p for p in glob.glob(os.path.join(args.data, "**", row["id"] + ".*"), recursive=True)
          if p.lower().endswith((".jpg", ".jpeg", ".png"))]
if not images:
    raise SystemExit(f"no image file for {row['id']} under {args.data}")
os.makedirs(args.group, exist_ok=False)
ext = os.path.splitext(images[0])[1]
shutil.copy(images[0], os.path.join(args.group, "image" + ext))
with open(os.path.join(args.group, "prefs.jsonl"), "w") as f:
    f.write(json.dumps(row) + "\n")
completions = [row["chosen"]] + [r["text"] for r in row["rejected"]]
with open(os.path.join(args.group, "score.jsonl"), "w") as f:
    for c in completions:
        f.write(json.dumps({"images": ["image" + ext], "prompt": row["prompt"], "completion": c}) + "\n")
print(json.dumps({"id": row["id"], "completions": len(completions), "image": images[0],
                  "completion_tokens": [len(tok.encode(c).ids) for c in completions]}))
