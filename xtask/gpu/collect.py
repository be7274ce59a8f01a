#!/usr/bin/env python3
"""Gathers what xtask/gpu/device-check.sh's steps wrote under WORK into one JSON object: for
each step its exit status, seconds and GPU peak, its standard output (JSON lines parsed), the
per-batch times `apo score` logs, the training stages' metrics.jsonl and the scores written
with -o.

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
print(json.dumps({"steps": steps}, indent=1))
