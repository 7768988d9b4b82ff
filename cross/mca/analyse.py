#!/usr/bin/env python3
"""Static throughput estimate of the aarch64 kernels' inner loops with llvm-mca.

    analyse.py TIPEDGE.s OUT_DIR      writes OUT_DIR/README.md and OUT_DIR/asm/*.s

TIPEDGE.s is rustc's `--emit asm` of the library (see run.sh). For each kernel the inner loop of
the register tile used at batch 1 (4 keys × 1 query) and at batch 16 (4 keys × 4 queries; 4 × 2
for SDOT) is cut out of the assembly, identified by its instruction mix, and fed to llvm-mca for
Cortex-A72 (Raspberry Pi 4) and Cortex-A76 (Pi 5) when the installed llvm-mca has a model for it.
"""
import os
import re
import shutil
import subprocess
import sys
from collections import Counter

C = 512  # CLIP ViT-B feature dimension
ITERATIONS = 200

# Function name fragment (legacy mangling), bytes per key value, dims per loop iteration.
KERNELS = {
    "f32": ("neon8dots_f32", 4, 4),
    "fp16": ("neon8dots_f16", 2, 8),
    "int8 (smlal, neon)": ("neon7dots_i8", 1, 16),
    "int8 (sdot, neon-dotprod)": ("dotprod7dots_i8", 1, 16),
}


def count(ins, *names):
    c = Counter(i.split()[0] for i in ins)
    return sum(c[n] for n in names)


# Loop signatures: (label, keys per block, queries per block, predicate on the body).
SHAPES = {
    "f32": [
        ("4 keys x 1 query", 4, 1, lambda i: count(i, "fmla") == 4),
        ("4 keys x 4 queries", 4, 4, lambda i: count(i, "fmla") == 16),
    ],
    "fp16": [
        ("4 keys x 1 query", 4, 1, lambda i: count(i, "fmla") == 8 and count(i, "fcvtl") == 4),
        ("4 keys x 4 queries", 4, 4, lambda i: count(i, "fmla") == 32),
    ],
    "int8 (smlal, neon)": [
        ("4 keys x 1 query", 4, 1, lambda i: count(i, "smlal", "smlal2") == 16 and count(i, "sshll") == 4),
        ("4 keys x 4 queries", 4, 4, lambda i: count(i, "smlal", "smlal2") == 64),
    ],
    "int8 (sdot, neon-dotprod)": [
        # Batch 1: every block is a first query block, which also sums the keys (4 extra SDOT).
        ("4 keys x 1 query, + key sums", 4, 1, lambda i: count(i, "sdot") == 12),
        ("4 keys x 2 queries, + key sums", 4, 2, lambda i: count(i, "sdot") == 20),
        ("4 keys x 2 queries", 4, 2, lambda i: count(i, "sdot") == 16),
    ],
}


def function(lines, name):
    start = next(i for i, l in enumerate(lines) if re.match(r"^_ZN\S*%s\S*:$" % re.escape(name), l))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(".Lfunc_end"))
    return lines[start:end]


def inner_loops(body):
    """Loops laid out as a label and a later branch back to it, with no loop inside."""
    labels = {l.rstrip(":"): i for i, l in enumerate(body) if re.match(r"^\.LBB\w+:$", l)}
    found = []
    for i, l in enumerate(body):
        m = re.match(r"^\s+(b\.\w+|b|cbnz|cbz|tbnz|tbz)\s+.*?(\.LBB\w+)\s*$", l)
        if m and m.group(2) in labels and labels[m.group(2)] < i:
            found.append((labels[m.group(2)], i))
    inner = [(a, b) for a, b in found if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in found)]
    for a, b in sorted(set(inner)):
        ins = []
        for l in body[a : b + 1]:
            s = l.split("//")[0].strip()
            if s and not s.startswith(".") and not s.endswith(":"):
                ins.append(s)
        yield ins


def mca_binaries():
    """The CPUs to model, as (mcpu, description, llvm-mca binary).

    LLVM schedules Cortex-A72 (and, up to at least LLVM 19, Cortex-A76) with its Cortex-A57
    model. Neoverse N1 is the A76's core with server trimmings (same pipelines: 4-wide decode,
    2 ASIMD pipes, 2 load pipes) and has its own model from LLVM 16 or so: it stands in for the
    A76 when the installed llvm-mca has it (recognised by its dispatch width, 3 in the A57 model).
    """
    found = [shutil.which(f"llvm-mca-{v}") for v in range(25, 13, -1)] + [shutil.which("llvm-mca")]
    found = [b for b in found if b]
    if not found:
        sys.exit("analyse.py: llvm-mca not found (Debian: apt-get install llvm-19)")
    runs = [("cortex-a72", "Cortex-A72 (Pi 4; LLVM's A57 model)", found[0])]
    probe = subprocess.run(
        [found[0], "-mtriple=aarch64", "-mcpu=neoverse-n1"], input="add x0, x0, x1\n",
        capture_output=True, text=True,
    ).stdout
    if re.search(r"Dispatch Width:\s+3\b", probe) is None:
        runs.append(("neoverse-n1", "Cortex-A76 (Pi 5; LLVM's Neoverse-N1 model)", found[0]))
    return runs


def mca(binary, cpu, path):
    out = subprocess.run(
        [binary, "-mtriple=aarch64", f"-mcpu={cpu}", "-mattr=+dotprod", f"-iterations={ITERATIONS}", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cycles = int(re.search(r"Total Cycles:\s+(\d+)", out).group(1))
    rthr = float(re.search(r"Block RThroughput:\s+([\d.]+)", out).group(1))
    return cycles / ITERATIONS, rthr, out


def applies(kernel, cpu):
    """The SDOT kernel only runs on CPUs with dotprod (not the A72)."""
    return not (kernel.startswith("int8 (sdot") and cpu == "cortex-a72")


def main():
    asm_path, out_dir = sys.argv[1], sys.argv[2]
    lines = open(asm_path).read().splitlines()
    os.makedirs(os.path.join(out_dir, "asm"), exist_ok=True)
    runs = mca_binaries()
    loops = {}  # (kernel, shape label) -> (file, instructions)
    for kernel, (fname, _, _) in KERNELS.items():
        candidates = list(inner_loops(function(lines, fname)))
        for label, _, _, pred in SHAPES[kernel]:
            match = next((ins for ins in candidates if pred(ins)), None)
            if match is None:
                sys.exit(f"analyse.py: no inner loop of {fname} looks like '{label}'")
            slug = re.sub(r"[^a-z0-9]+", "_", f"{kernel} {label}".lower()).strip("_")
            path = os.path.join(out_dir, "asm", slug + ".s")
            with open(path, "w") as f:
                f.write("\n".join(match) + "\n")
            loops[(kernel, label)] = (path, match)

    results = {}  # (kernel, label, cpu) -> (cycles per iteration, block rthroughput)
    for (kernel, label), (path, _) in loops.items():
        for cpu, _, binary in runs:
            if applies(kernel, cpu):
                results[(kernel, label, cpu)] = mca(binary, cpu, path)[:2]

    # Per kernel and CPU: cycles per key at batch 1, cycles per key and query at batch 16.
    summary = {}
    for kernel, (_, vbytes, step) in KERNELS.items():
        iters = C // step
        key_bytes = C * vbytes + (4 if vbytes == 1 else 0)
        shapes = SHAPES[kernel]
        for cpu, _, _ in runs:
            if not applies(kernel, cpu):
                continue
            c1 = results[(kernel, shapes[0][0], cpu)][0]
            if kernel.startswith("int8 (sdot"):
                # 16 queries = 8 blocks of 2; the first block of each key block sums the keys.
                cs = results[(kernel, shapes[1][0], cpu)][0]
                cn = results[(kernel, shapes[2][0], cpu)][0]
                kq16 = iters * (cs + 7 * cn) / 8 / (4 * 2)
            else:
                kq16 = iters * results[(kernel, shapes[1][0], cpu)][0] / 16
            summary[(kernel, cpu)] = (key_bytes, iters * c1 / 4, kq16)

    md = []
    w = md.append
    w("# Static throughput of the aarch64 kernels (llvm-mca)")
    w("")
    w("Generated by `cross/mca/run.sh` (do not edit by hand). No ARM hardware was used: these are")
    w("llvm-mca's scheduling-model estimates for the inner loops of the release build, with every")
    w("load hitting L1. They bound the compute side; memory bandwidth bounds the other.")
    w("")
    w(f"llvm-mca: `{runs[0][2]}`. CPUs modelled:")
    w("")
    for cpu, desc, _ in runs:
        w(f"- `-mcpu={cpu}`: {desc}")
    w("")
    w("LLVM has no Cortex-A72 model of its own (the A57 one has the same SIMD pipes: integer")
    w("multiplies such as `smlal` on one pipe, 1 per cycle; FP `fmla` Q-form 1 per cycle). Up to")
    w("at least LLVM 19 the Cortex-A76 is scheduled with that A57 model too, so the A76 column")
    w("uses Neoverse N1, the same core.")
    w("")
    w(f"## Cycles (C = {C})")
    w("")
    w("Batch 1 uses the 4 keys × 1 query tile; batch 16 walks 4 blocks of the 4 × 4 tile (NEON) or")
    w("8 blocks of the 4 × 2 SDOT tile, the first of which also sums the keys. Per key per query at")
    w("batch 16 is the compute cost a batch amortises; multiply by 16 for the cost of one key.")
    w("")
    w("| kernel | CPU | bytes/key | cycles/key, batch 1 | bytes/cycle consumed, batch 1 | cycles/key/query, batch 16 | MACs/cycle, batch 16 |")
    w("|---|---|---|---|---|---|---|")
    for (kernel, cpu), (kb, b1, kq16) in summary.items():
        w(f"| {kernel} | {cpu} | {kb} | {b1:.0f} | {kb / b1:.1f} | {kq16:.1f} | {C / kq16:.1f} |")
    w("")
    w("## Against the Raspberry Pi 4's memory bandwidth")
    w("")
    w("A Pi 4 core streams about 4–5 GB/s from DRAM at 1.5–1.8 GHz: 2.2–3.3 bytes per cycle, so")
    w("a key of B bytes takes B / 3.3 … B / 2.2 cycles to arrive. A kernel is memory-bound when its")
    w("compute cycles per key are below that.")
    w("")
    w("| kernel (A72) | bytes/key | memory cycles/key | compute cycles/key, batch 1 | bound, batch 1 | compute cycles/key, batch 16 | bound, batch 16 |")
    w("|---|---|---|---|---|---|---|")
    for (kernel, cpu), (kb, b1, kq16) in summary.items():
        if cpu != "cortex-a72":
            continue
        lo, hi = kb / 3.33, kb / 2.22
        b16 = 16 * kq16

        def bound(c):
            return "memory" if c < lo else ("compute" if c > hi else "balanced")

        w(f"| {kernel} | {kb} | {lo:.0f}–{hi:.0f} | {b1:.0f} | {bound(b1)} | {b16:.0f} | {bound(b16)} |")
    w("")
    w("Reading: at batch 1 every A72 kernel keeps up with DRAM (fp16 only just: one `fcvtl` costs")
    w("1.5 `fmla` in this model). Batches are compute-bound on the A72: int8 with the i16")
    w("query runs at 4 MACs/cycle (one `smlal` per cycle, the A72 has one integer-multiply pipe),")
    w("the same rate as f32 `fmla`, and any int8 scheme without SDOT has that ceiling (widening the")
    w("key to f32 and using `fmla` is also 4/cycle, plus the conversions). A batch still pays: the")
    w("keys are read once for all its queries, so a batch of 16 costs about 16 × the batch-1 compute")
    w("but only 1 × the memory traffic. With SDOT (A76) int8 reaches about 15 MACs/cycle at batch 16")
    w("(two SDOT pipes; the exact i16 split costs 2 SDOT per 16 products).")
    w("")
    w("## Loops analysed")
    w("")
    for (kernel, label), (path, ins) in loops.items():
        w(f"### {kernel}: {label}")
        w("")
        for cpu, _, _ in runs:
            if (kernel, label, cpu) in results:
                cyc, rthr = results[(kernel, label, cpu)]
                w(f"- {cpu}: {cyc:.2f} cycles/iteration (block reciprocal throughput {rthr:.1f})")
        w(f"- `{os.path.relpath(path, out_dir)}`, {len(ins)} instructions")
        w("")
        w("```asm")
        md.extend(ins)
        w("```")
        w("")
    w("## Commands")
    w("")
    w("```sh")
    w("cross/mca/run.sh   # builds the asm, cuts out the loops, runs llvm-mca, writes this file")
    w("# one loop by hand:")
    for cpu, _, b in runs:
        w(f"{os.path.basename(b)} -mtriple=aarch64 -mcpu={cpu} -mattr=+dotprod -iterations={ITERATIONS} cross/mca/asm/<loop>.s")
    w("```")
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    for (kernel, cpu), (kb, b1, kq) in summary.items():
        print(f"{cpu:11} {kernel:27} batch 1: {b1:5.0f} cycles/key ({kb} B)  batch 16: {kq:5.1f} cycles/key/query")


if __name__ == "__main__":  # also imported by cross/insn/kernel_loops.py
    main()
