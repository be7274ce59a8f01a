#!/usr/bin/env python3
"""The GPU workload of xtask/gpu/device-check.sh in transformers (+ PEFT), for the ratio with
`apo`: the rows of GROUP/score.jsonl (one image prompt, 1 + N completions) in one right-padded
batch, (a) scored without gradients (the output head on the completion positions only, log-probs
in f32, as `apo score`) and (b) trained for STEPS Plackett-Luce steps (beta 0.1, reference = the
base, LoRA r 16 / alpha 32 / dropout 0 on every linear map of the language model, AdamW lr 5e-6,
weight decay 0.01, as `apo train apo` with the same settings). bf16 weights, the attention
implementation ATTN (sdpa, transformers' default, or eager). With --f32-reference the rows are
also scored by the checkpoint in f32 with eager attention (the numerics reference).

    torch_shapes.py CKPT GROUP [--steps 4] [--attn sdpa] [--f32-reference]

Prints one JSON line."""

import argparse
import gc
import json
import os
import time

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

ap = argparse.ArgumentParser()
ap.add_argument("ckpt")
ap.add_argument("group")
ap.add_argument("--steps", type=int, default=4)
ap.add_argument("--attn", default="sdpa")
ap.add_argument("--f32-reference", action="store_true")
ap.add_argument("--device", default="cuda")
ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
ap.add_argument("--rows", type=int, default=0, help="only the first ROWS rows (0: all)")
args = ap.parse_args()
dev = torch.device(args.device)
cuda = dev.type == "cuda"

rows = [json.loads(l) for l in open(os.path.join(args.group, "score.jsonl")) if l.strip()]
rows = rows[: args.rows] if args.rows else rows
DTYPE = torch.bfloat16 if args.dtype == "bf16" else torch.float32
proc = AutoProcessor.from_pretrained(args.ckpt)
proc.tokenizer.padding_side = "right"


def build():
    texts, prompts, images = [], [], []
    for r in rows:
        imgs = [Image.open(os.path.join(args.group, p)).convert("RGB") for p in r["images"]]
        user = {"role": "user", "content": [{"type": "image"} for _ in imgs] + [{"type": "text", "text": r["prompt"]}]}
        asst = {"role": "assistant", "content": [{"type": "text", "text": r["completion"]}]}
        texts.append(proc.apply_chat_template([user, asst], add_generation_prompt=False))
        p = proc(text=[proc.apply_chat_template([user], add_generation_prompt=True)], images=imgs, return_tensors="pt")
        prompts.append(int(p["input_ids"].shape[1]))
        images.append(imgs)
    enc = proc(text=texts, images=images, padding=True, return_tensors="pt")
    return enc, prompts


enc, prompt_len = build()
lengths = enc["attention_mask"].sum(1).tolist()
completion_tokens = [int(l - n) for l, n in zip(lengths, prompt_len)]
enc = {k: v.to(dev) for k, v in enc.items()}


def sync():
    if cuda:
        torch.cuda.synchronize()


def logprobs(model):
    for m in model.modules():
        if hasattr(m, "rope_deltas"):
            m.rope_deltas = None
    hidden = model.model(**enc, use_cache=False).last_hidden_state
    ids = enc["input_ids"]
    out = []
    for i, (n, l) in enumerate(zip(prompt_len, lengths)):
        logits = model.lm_head(hidden[i, n - 1 : l - 1]).float()
        lp = torch.log_softmax(logits, -1)
        out.append(lp.gather(1, ids[i, n:l].unsqueeze(1)).sum())
    return torch.stack(out)


def load(dtype, attn):
    extra = {"device_map": args.device} if cuda else {}
    return AutoModelForImageTextToText.from_pretrained(args.ckpt, dtype=dtype, attn_implementation=attn, **extra).to(dev)


def mib(x):
    return round(x / 2**20, 1)


result = {"bench": "gpu_shapes", "implementation": f"transformers {__import__('transformers').__version__}"
          f" + peft {__import__('peft').__version__} (torch {torch.__version__}, {args.attn}, {args.dtype})",
          "rows": len(rows), "tokens_per_row": lengths, "completion_tokens": completion_tokens}
t = time.perf_counter()
model = load(DTYPE, args.attn)
model.eval()
sync()
result["load_s"] = round(time.perf_counter() - t, 2)

with torch.no_grad():
    logprobs(model)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    reps = 5
    for _ in range(reps):
        lp = logprobs(model)
    sync()
    result["score_s_per_call"] = (time.perf_counter() - t) / reps
    result["score_logprobs"] = lp.tolist()
    if cuda:
        result["score_peak_allocated_mib"] = mib(torch.cuda.max_memory_allocated())
        result["score_peak_reserved_mib"] = mib(torch.cuda.max_memory_reserved())

from peft import LoraConfig, get_peft_model  # noqa: E402

target = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=target))
peft_model.train()
with torch.no_grad():
    reference = logprobs(model).detach()
params = [p for p in peft_model.parameters() if p.requires_grad]
result["lora_parameters"] = sum(p.numel() for p in params)
result["lora_dtype"] = str(params[0].dtype)
opt = torch.optim.AdamW(params, lr=5e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
if cuda:
    torch.cuda.reset_peak_memory_stats()
times, losses = [], []
for step in range(args.steps + 1):
    sync()
    t = time.perf_counter()
    s = 0.1 * (logprobs(model) - reference)
    loss = torch.logsumexp(s, 0) - s[0]
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
    sync()
    times.append(time.perf_counter() - t)
result["train_losses"] = losses
result["train_s_per_step"] = sum(times[1:]) / max(1, len(times) - 1)
result["train_first_step_s"] = times[0]
if cuda:
    result["train_peak_allocated_mib"] = mib(torch.cuda.max_memory_allocated())
    result["train_peak_reserved_mib"] = mib(torch.cuda.max_memory_reserved())
del opt, params, peft_model, model
gc.collect()
if cuda:
    torch.cuda.empty_cache()

if args.f32_reference:
    t = time.perf_counter()
    model = load(torch.float32, "eager")
    model.eval()
    with torch.no_grad():
        result["score_logprobs_f32_eager"] = logprobs(model).tolist()
    result["f32_reference_s"] = round(time.perf_counter() - t, 2)
print(json.dumps(result))
