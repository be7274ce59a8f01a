#!/usr/bin/env python3
"""The `cargo xtask bench hf-train` workload in transformers + PEFT: one LoRA (r 8, alpha 16,
every linear map of the language model) Plackett-Luce step over the 1 + 3 completions of
lora.json's step case, reference log-probs computed once, torch AdamW (lr 1e-3, weight decay
0.01, as apo's defaults), eager attention, f32 on the CPU with the same thread count. Prints one
JSON line. Needs the packages of crates/apo-models/tests/fixtures/requirements.txt."""

import json
import os
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "..", "apo-models", "tests", "fixtures")
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 100
threads = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
torch.set_num_threads(threads)
path = os.path.join(FIX, "qwen2.5-vl-nested-f32")
base = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
proc = AutoProcessor.from_pretrained(path)
proc.image_processor = AutoImageProcessor.from_pretrained(path, backend="pil")
target = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=target))
model.train()
rows = json.load(open(os.path.join(FIX, "lora", "expected", "lora.json")))["step"]["pl_rows"]


def inputs(row):
    imgs = [Image.open(os.path.join(FIX, p)) for p in row["images"]]
    user = {"role": "user", "content": [{"type": "image"} for _ in imgs] + [{"type": "text", "text": row["prompt"]}]}
    asst = {"role": "assistant", "content": [{"type": "text", "text": row["completion"]}]}
    p = proc(text=[proc.apply_chat_template([user], add_generation_prompt=True)], images=imgs, return_tensors="pt")
    f = proc(text=[proc.apply_chat_template([user, asst], add_generation_prompt=False)], images=imgs, return_tensors="pt")
    return f, p["input_ids"].shape[1]


batch = [inputs(r) for r in rows]
tokens = sum(int(f["input_ids"].shape[1]) for f, _ in batch)


def logprobs():
    out = []
    for f, n in batch:
        for m in model.modules():
            if hasattr(m, "rope_deltas"):
                m.rope_deltas = None
        logits = model(**f, use_cache=False).logits[0]
        lp = torch.log_softmax(logits.float(), -1)
        ids = f["input_ids"][0]
        out.append(lp[torch.arange(n - 1, ids.shape[0] - 1), ids[n:]].sum())
    return torch.stack(out)


with torch.no_grad():
    reference = logprobs().detach()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
timed = 0.0
rss = []
first = last = float("nan")
for step in range(steps):
    t = time.perf_counter()
    s = 0.1 * (logprobs() - reference)
    loss = torch.logsumexp(s, 0) - s[0]
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step == 0:
        first = loss.item()
    last = loss.item()
    if 3 <= step < 23:
        timed += time.perf_counter() - t
    if step + 1 in (10, 50, 100):
        with open("/proc/self/status") as fh:
            cur = next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:"))
        rss.append({"step": step + 1, "rss_mib": cur / 1024})
print(json.dumps({
    "bench": "hf_train_step",
    "implementation": f"transformers {__import__('transformers').__version__} + peft {__import__('peft').__version__} (torch {torch.__version__}, eager, f32, {threads} threads)",
    "checkpoint": "qwen2.5-vl-nested-f32",
    "sequences": len(batch),
    "tokens_per_step": tokens,
    "steps": steps,
    "seconds_per_step": timed / 20,
    "first_loss": first,
    "last_loss": last,
    "rss": rss,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
