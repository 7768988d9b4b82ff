#!/usr/bin/env python3
"""Guest instructions per function from the qemu plugin's counts (cross/insn/count.c).

    attribute.py BINARY COUNTS QEMU_LOG [--minus COUNTS2 QEMU_LOG2] [--per N] [--top K] [--json]

BINARY is the unstripped aarch64 executable that ran; COUNTS the plugin's output; QEMU_LOG the
`-d page -D FILE` log of the same run (it gives the load address). With --minus, the second
run's counts are subtracted symbol by symbol and the difference divided by --per: two runs of
the same command that differ only in the number of forward passes give the instructions of one
pass, without loading. Blocks outside the binary (ld.so, libc, the vDSO) are one row each by
library when the log names them, else "[outside the binary]".
"""
import argparse
import bisect
import json
import re
import subprocess
import sys
from collections import defaultdict


def symbols(binary):
    """Sorted (start, end, name) of the binary's functions, demangled, hashes dropped."""
    out = subprocess.run(
        ["aarch64-linux-gnu-nm", "--defined-only", "-C", "-S", "-n", binary],
        check=True, capture_output=True, text=True).stdout
    syms = []
    for line in out.splitlines():
        m = re.match(r"([0-9a-f]+) (?:([0-9a-f]+) )?([tTwW]) (.*)$", line)
        if not m:
            continue
        if m.group(4).startswith((".", "$")):
            continue  # local labels and mapping symbols inside an assembly kernel
        start = int(m.group(1), 16)
        # The assembly kernels (tract-linalg's .S files) have no size: they end where the next
        # symbol starts.
        size = int(m.group(2), 16) if m.group(2) else None
        name = re.sub(r"::h[0-9a-f]{16}$", "", m.group(4))
        syms.append([start, None if size is None else start + size, name])
    for i, sym in enumerate(syms):
        if sym[1] is None:
            sym[1] = syms[i + 1][0] if i + 1 < len(syms) else sym[0] + 1
    return [tuple(s) for s in syms]


def load_base(log):
    with open(log) as f:
        for line in f:
            m = re.match(r"start_code\s+0x([0-9a-f]+)", line)
            if m:
                return int(m.group(1), 16)
    sys.exit(f"{log}: no start_code line (run qemu with -d page -D {log})")


def per_symbol(binary_syms, counts, log):
    base = load_base(log)
    starts = [s[0] for s in binary_syms]
    lo, hi = binary_syms[0][0], binary_syms[-1][1]
    totals = defaultdict(int)
    with open(counts) as f:
        for line in f:
            vaddr, _n, executed = line.split()
            off = int(vaddr, 16) - base
            if not lo <= off < hi:
                totals["[outside the binary: ld.so, libc, vDSO]"] += int(executed)
                continue
            i = bisect.bisect_right(starts, off) - 1
            s = binary_syms[i] if i >= 0 else None
            name = s[2] if s and off < s[1] else "[no symbol]"
            totals[name] += int(executed)
    return totals


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("counts")
    ap.add_argument("log")
    ap.add_argument("--minus", nargs=2, metavar=("COUNTS2", "LOG2"))
    ap.add_argument("--per", type=float, default=1.0)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    syms = symbols(a.binary)
    totals = per_symbol(syms, a.counts, a.log)
    if a.minus:
        other = per_symbol(syms, *a.minus)
        totals = {k: totals.get(k, 0) - other.get(k, 0) for k in set(totals) | set(other)}
    rows = sorted(((v / a.per, k) for k, v in totals.items()), reverse=True)
    total = sum(v for v, _ in rows)
    if a.json:
        print(json.dumps({"total": total, "symbols": [{"name": k, "instructions": v} for v, k in rows]}))
        return
    print(f"{total:,.0f} guest instructions" + (f" per pass (difference / {a.per:g})" if a.minus else ""))
    for v, k in rows[:a.top]:
        print(f"{v:>16,.0f} {100 * v / total:6.2f}%  {k[:150]}")


if __name__ == "__main__":
    main()
