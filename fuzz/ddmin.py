#!/usr/bin/env python3
"""ddmin.py BIN INPUT KEY OUT: shrink INPUT while BIN's panic output still
contains KEY (libFuzzer's tmin keeps any crash, which can drift to another bug)."""
import subprocess, sys, tempfile, os
bin_, inp, key, out = sys.argv[1:5]
data = open(inp, "rb").read()
tmp = tempfile.mktemp()
runs = 0
def bad(d):
    global runs
    runs += 1
    open(tmp, "wb").write(d)
    r = subprocess.run([bin_, "-runs=1", tmp], capture_output=True, timeout=30)
    return key.encode() in r.stdout + r.stderr
assert bad(data), "input does not reproduce the key"
n = 2
while len(data) >= 2:
    chunk = max(1, len(data) // n)
    removed = False
    for i in range(0, len(data), chunk):
        cand = data[:i] + data[i + chunk:]
        if cand and bad(cand):
            data = cand
            n = max(n - 1, 2)
            removed = True
            break
    if not removed:
        if chunk == 1:
            break
        n = min(len(data), n * 2)
open(out, "wb").write(data)
print(f"{len(data)} bytes after {runs} runs -> {out}")
