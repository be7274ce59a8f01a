#!/usr/bin/env python3
"""The `cargo xtask bench hf` workload in transformers: the four rows of score.jsonl scored in one
right-padded batch (processor, forward, log-softmax, gather), eager attention, f32 on the CPU
with the same thread count. Prints one JSON line. Needs the packages of
tests/fixtures/requirements.txt."""

import json
import os
import resource
import sys
import time

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures")
name = sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-vl-nested-f32"
threads = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
torch.set_num_threads(threads)
path = os.path.join(FIX, name)
model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager", dtype=torch.float32).eval()
proc = AutoProcessor.from_pretrained(path)
proc.image_processor = AutoImageProcessor.from_pretrained(path, backend="pil")
proc.tokenizer.padding_side = "right"
rows = [json.loads(l) for l in open(os.path.join(FIX, "score.jsonl")) if l.strip()]


def render(row, with_completion):
    user = {"role": "user", "content": [{"type": "image"} for _ in row["images"]] + [{"type": "text", "text": row["prompt"]}]}
    msgs = [user]
    if with_completion:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": row["completion"]}]})
    return proc.apply_chat_template(msgs, add_generation_prompt=not with_completion, tokenize=False)


def score():
    images = [Image.open(os.path.join(FIX, p)) for r in rows for p in r["images"]]
    prompts = proc(text=[render(r, False) for r in rows], images=images or None, padding=True, return_tensors="pt")
    full = proc(text=[render(r, True) for r in rows], images=images or None, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**full).logits
    lp = torch.log_softmax(logits.float(), -1)
    out = []
    for b in range(len(rows)):
        n_prompt = int(prompts["attention_mask"][b].sum())
        n_full = int(full["attention_mask"][b].sum())
        ids = full["input_ids"][b]
        out.append(float(lp[b, n_prompt - 1 : n_full - 1].gather(-1, ids[n_prompt:n_full, None]).sum()))
    return out, int(full["attention_mask"].sum())


_, tokens = score()
reps = 20
t = time.perf_counter()
for _ in range(reps):
    score()
secs = time.perf_counter() - t
print(json.dumps({
    "bench": "hf_score",
    "implementation": f"transformers {__import__('transformers').__version__} (torch {torch.__version__}, eager, f32, {threads} threads)",
    "checkpoint": name,
    "rows": len(rows),
    "tokens_per_call": tokens,
    "calls": reps,
    "seconds_per_call": secs / reps,
    "tokens_per_second": tokens * reps / secs,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
