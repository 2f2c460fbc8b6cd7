#!/usr/bin/env python3
"""Tables of ns/request and ratios to bare from criterion's output of `cargo bench --bench overhead`.

    python3 benches/ratios.py [target/criterion]

Reads each benchmark's mean (and median) from <dir>/<group>/<scenario>/<config>/new/estimates.json.
"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "target", "criterion")
configs = ["bare", "ours_memory", "tower_sessions_memory"]


def estimate(path, stat):
    with open(path) as f:
        return json.load(f)[stat]["point_estimate"]


for group in ["single", "concurrent"]:
    base = os.path.join(root, group)
    if not os.path.isdir(base):
        continue
    scenarios = sorted(os.listdir(base), key=lambda s: (s.split("_")[0], len(s), s))
    print(f"### {group} (median ns per request)\n")
    print("| scenario | bare | ours | tower-sessions | ours / bare | tower-sessions / bare | "
          "our overhead | their overhead | our overhead / theirs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scenario in scenarios:
        values = {}
        for config in configs:
            path = os.path.join(base, scenario, config, "new", "estimates.json")
            if os.path.exists(path):
                values[config] = estimate(path, "median")
        if len(values) != 3:
            continue
        bare, ours, theirs = (values[c] for c in configs)
        print(f"| {scenario} | {bare:.0f} | {ours:.0f} | {theirs:.0f} | {ours / bare:.2f} | "
              f"{theirs / bare:.2f} | {ours - bare:.0f} | {theirs - bare:.0f} | "
              f"{(ours - bare) / (theirs - bare):.2f} |")
    print()
