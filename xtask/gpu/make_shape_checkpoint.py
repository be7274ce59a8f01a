#!/usr/bin/env python3
"""Writes a random-weight Qwen2.5-VL checkpoint in the 3B or 7B shapes (or a small one with the
real vocabulary, for trying the scripts on a CPU), in bf16, nothing taken from the hub.

    make_shape_checkpoint.py FIXTURE_DIR OUT_DIR 3b|7b|small [--device cuda]

FIXTURE_DIR is the committed tiny `qwen2.5-vl-nested-f32` checkpoint: its config (token ids,
rope settings) is scaled to the shapes of Qwen2.5-VL-3B/7B-Instruct, and its tokenizer, chat
template and generation config are copied. The tokenizer is the fixtures' 320-token byte-level
BPE, so text takes more tokens per character than with Qwen's; the vocabulary (and the output
head) have the real size. The processor's `longest_edge` is the released 12,845,056 pixels.
Weights: transformers' own initialisation (normal, std 0.02), seeded. Prints one JSON line."""

import json
import os
import shutil
import sys
import time

import torch
from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

SHAPES = {
    # Qwen2.5-VL-3B-Instruct / -7B-Instruct (config.json of the released checkpoints).
    "3b": dict(hidden=2048, layers=36, heads=16, kv=2, ffn=11008, vocab=151936, tied=True, depth=32),
    "7b": dict(hidden=3584, layers=28, heads=28, kv=4, ffn=18944, vocab=152064, tied=False, depth=32),
    # The real vocabulary and vision width on a model small enough for a CPU.
    "small": dict(hidden=256, layers=2, heads=2, kv=2, ffn=512, vocab=152064, tied=False, depth=4),
}


def main():
    fixture, out, shape = sys.argv[1], sys.argv[2], sys.argv[3]
    device = sys.argv[5] if len(sys.argv) > 5 and sys.argv[4] == "--device" else "cpu"
    if os.path.exists(out):
        sys.exit(f"{out} exists; refusing to overwrite it")
    s = SHAPES[shape]
    cfg = AutoConfig.from_pretrained(fixture)
    t, v = cfg.text_config, cfg.vision_config
    t.hidden_size = s["hidden"]
    t.num_hidden_layers = s["layers"]
    t.num_attention_heads = s["heads"]
    t.num_key_value_heads = s["kv"]
    t.intermediate_size = s["ffn"]
    t.vocab_size = s["vocab"]
    t.max_position_embeddings = 128000
    t.max_window_layers = s["layers"]
    t.layer_types = ["full_attention"] * s["layers"]
    t.rope_parameters = {"mrope_section": [16, 24, 24], "rope_theta": 1000000.0, "rope_type": "default"}
    v.depth = s["depth"]
    v.hidden_size = 1280 if shape != "small" else 128
    v.intermediate_size = 3420 if shape != "small" else 256
    v.num_heads = 16 if shape != "small" else 2
    v.out_hidden_size = s["hidden"]
    v.fullatt_block_indexes = [7, 15, 23, 31] if s["depth"] == 32 else [1, 3]
    cfg.tie_word_embeddings = s["tied"]
    t.tie_word_embeddings = s["tied"]
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    init_s = time.perf_counter() - start
    start = time.perf_counter()
    model.save_pretrained(out, max_shard_size="4GB")
    save_s = time.perf_counter() - start
    for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]:
        shutil.copy(os.path.join(fixture, name), os.path.join(out, name))
    with open(os.path.join(fixture, "processor_config.json")) as f:
        proc = json.load(f)
    proc["image_processor"]["size"] = {"longest_edge": 12845056, "shortest_edge": 3136}
    with open(os.path.join(out, "processor_config.json"), "w") as f:
        json.dump(proc, f, indent=2)
    print(json.dumps({"checkpoint": out, "shape": shape, "parameters": params,
                      "init_s": round(init_s, 2), "save_s": round(save_s, 2)}))


if __name__ == "__main__":
    main()
