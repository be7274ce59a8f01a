#!/usr/bin/env python3
"""Gathers what xtask/gpu/device-check.sh's steps wrote under WORK into one JSON object: for
each step its exit status, seconds and GPU peak, its standard output (JSON lines parsed), the
per-batch times `apo score` logs, the training stages' metrics.jsonl and the scores written
with -o; and a summary: losses per device, the log-prob differences (CUDA against the CPU on
the tiny fixture; apo's and transformers' bf16 against transformers' f32 in the real shapes),
seconds per scoring batch and per training step of apo and of transformers, and their ratio.

    collect.py WORK > results.json"""

import json
import os
import re
import sys

work = sys.argv[1]


def lines(path):
    out = []
    if not os.path.exists(path):
        return out
    for l in open(path, errors="replace"):
        l = l.strip()
        if not l:
            continue
        try:
            out.append(json.loads(l))
        except json.JSONDecodeError:
            out.append(l[:500])
    return out


steps = []
for meta in lines(os.path.join(work, "steps.jsonl")):
    if not isinstance(meta, dict):
        continue
    name = meta["step"]
    entry = dict(meta)
    stdout = lines(os.path.join(work, name + ".out"))
    entry["stdout"] = stdout if len(json.dumps(stdout)) < 200_000 else stdout[:50]
    err = os.path.join(work, name + ".err")
    if os.path.exists(err):
        text = open(err, errors="replace").read()
        entry["batch_seconds"] = [float(x) for x in re.findall(r"answered in ([0-9.]+) s", text)]
        if meta.get("rc", 0) != 0:
            entry["stderr_tail"] = text[-3000:]
    for v in stdout:
        if isinstance(v, dict) and isinstance(v.get("metrics"), str):
            entry["metrics"] = lines(v["metrics"])
    m = re.match(r"score-(.+)$", name)
    if m:
        entry["scores"] = lines(os.path.join(work, f"score-{m.group(1)}.jsonl"))
    steps.append(entry)


def by_name(name):
    return next((e for e in steps if e["step"] == name), None)


def report(e):
    """The JSON stage report a training step printed."""
    if not e:
        return None
    return next((v for v in e.get("stdout", []) if isinstance(v, dict) and "first_loss" in v), None)


def logprobs(e):
    if not e:
        return []
    rows = e.get("scores") or e.get("stdout", [])
    return [v["logprob"] for v in rows if isinstance(v, dict) and "logprob" in v]


def max_rel(a, b):
    if not a or len(a) != len(b):
        return None
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))


summary = {}
for name in [e["step"] for e in steps if e["step"].startswith(("smoke-sft-", "tiny-sft-", "tiny-apo-"))]:
    r = report(by_name(name))
    if r:
        summary[name] = {"first_loss": r["first_loss"], "last_loss": r["last_loss"], "seconds": r["seconds"]}
cpu = logprobs(by_name("tiny-score-cpu"))
for e in steps:
    if e["step"].startswith("tiny-score-") and e["step"] != "tiny-score-cpu":
        summary[e["step"] + "-vs-cpu-max-rel"] = max_rel(logprobs(e), cpu)
for e in steps:
    m = re.match(r"score-(.+)$", e["step"])
    if not m:
        continue
    s = m.group(1)
    torch_run = next((v for v in (by_name(f"torch-{s}") or {}).get("stdout", []) if isinstance(v, dict) and "bench" in v), None)
    out = {"apo_batch_seconds": e.get("batch_seconds"), "apo_score_gpu_peak_mib": e.get("gpu_peak_mib")}
    later = (e.get("batch_seconds") or [])[1:]
    if later:
        out["apo_score_s_per_batch"] = sum(later) / len(later)
    apo_lp = logprobs(e)[:8]
    if torch_run:
        out["torch_score_s_per_call"] = torch_run.get("score_s_per_call")
        out["torch_train_s_per_step"] = torch_run.get("train_s_per_step")
        out["torch_train_peak_reserved_mib"] = torch_run.get("train_peak_reserved_mib")
        out["torch_gpu_peak_mib"] = by_name(f"torch-{s}").get("gpu_peak_mib")
        ref = torch_run.get("score_logprobs_f32_eager")
        if ref:
            out["apo_vs_torch_f32_max_rel"] = max_rel(apo_lp, ref)
            out["torch_vs_torch_f32_max_rel"] = max_rel(torch_run.get("score_logprobs"), ref)
        if out.get("apo_score_s_per_batch") and out["torch_score_s_per_call"]:
            out["score_time_ratio_apo_over_torch"] = out["apo_score_s_per_batch"] / out["torch_score_s_per_call"]
    tokens = sum(v.get("tokens", 0) for v in (e.get("scores") or [])[:8] if isinstance(v, dict))
    for spp in ("spp2", "spp0"):
        t = by_name(f"train-{s}-{spp}")
        if not t:
            continue
        metrics = [m for m in t.get("metrics", []) if isinstance(m, dict) and m.get("tokens_per_s")]
        secs = [tokens / m["tokens_per_s"] for m in metrics] if tokens else []
        out[f"apo_train_{spp}"] = {"rc": t.get("rc"), "gpu_peak_mib": t.get("gpu_peak_mib"),
                                   "losses": [m.get("loss") for m in metrics], "step_seconds": secs}
        if len(secs) > 1 and torch_run and torch_run.get("train_s_per_step"):
            out[f"apo_train_{spp}"]["time_ratio_apo_over_torch"] = (sum(secs[1:]) / len(secs[1:])) / torch_run["train_s_per_step"]
    summary[s] = out
print(json.dumps({"summary": summary, "steps": steps}, indent=1))
