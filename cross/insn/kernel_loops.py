#!/usr/bin/env python3
"""llvm-mca's cycles for the inner loops of tract's aarch64 matrix kernels, as linked in BINARY.

    kernel_loops.py BINARY [--mca llvm-mca-19]

For each kernel (f32 8x8, i32 8x8 with smlal, i32 8x8 with sdot) it disassembles the loop between
its label and the next label of the binary (aarch64-linux-gnu-objdump), runs llvm-mca for the
Cortex-A72 (LLVM's A57 model, the Pi 4) and the Neoverse-N1 (the Pi 5's Cortex-A76 core), and
prints instructions, multiply-accumulates and cycles per iteration: the steady-state rate of the
products when their operands are in L1.
"""
import argparse
import re
import subprocess

# (kernel symbol prefix, loop label, MACs per loop iteration, needs dotprod)
LOOPS = [
    ("arm64simd_mmm_f32_8x8_gen", ".packed_packed_loop_4", 8 * 8 * 4, False),
    ("arm64simd_mmm_i32_8x8_0", ".packed_packed_loop_1_i8i8", 8 * 8, False),
    ("arm64simd_mmm_i32_8x8_dot", ".packed_packed_loop_1_i8i8", 8 * 8 * 4, True),
]
CPUS = [("cortex-a72", "Pi 4"), ("neoverse-n1", "Pi 5 (Cortex-A76)")]


def symbols(binary):
    out = subprocess.run(["aarch64-linux-gnu-nm", "-n", binary], check=True, capture_output=True,
                         text=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            syms.append((int(parts[0], 16), parts[2]))
    return syms


def loop_asm(binary, syms, kernel, label):
    start = next(i for i, (_, n) in enumerate(syms) if n.startswith(kernel))
    i = next(j for j in range(start + 1, len(syms)) if syms[j][1] == label)
    lo, hi = syms[i][0], next(a for a, _ in syms[i + 1:] if a > syms[i][0])
    dis = subprocess.run(["aarch64-linux-gnu-objdump", "-d", "--no-show-raw-insn",
                          f"--start-address={lo:#x}", f"--stop-address={hi:#x}", binary],
                         check=True, capture_output=True, text=True).stdout
    lines = []
    for line in dis.splitlines():
        m = re.match(r"\s+[0-9a-f]+:\s+(.*)$", line)
        if m:
            text = re.sub(r"\s*//.*$", "", m.group(1))
            text = re.sub(r"\s+<[^>]*>$", "", text)
            lines.append(text.strip())
    # the backward branch at the end: point it at the loop's own first instruction
    lines = [re.sub(r"^(b\.\w+|bne|bgt|bge|b)\s+[0-9a-f]+$", r"\1 .Lloop", l) for l in lines]
    return [".Lloop:"] + lines


def mca(tool, cpu, asm):
    out = subprocess.run([tool, "-mtriple=aarch64", f"-mcpu={cpu}", "-iterations=200"],
                         input="\n".join(asm) + "\n", check=True, capture_output=True, text=True).stdout
    cycles = int(re.search(r"Total Cycles:\s+(\d+)", out).group(1))
    iters = int(re.search(r"Iterations:\s+(\d+)", out).group(1))
    return cycles / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--mca", default="llvm-mca-19")
    a = ap.parse_args()
    syms = symbols(a.binary)
    print("| kernel loop | instructions | MACs | " + " | ".join(f"{c} cycles ({b})" for c, b in CPUS)
          + " | " + " | ".join(f"{c} MACs/cycle" for c, _ in CPUS) + " |")
    print("|---|---:|---:|" + "---:|" * (2 * len(CPUS)))
    for kernel, label, macs, dot in LOOPS:
        asm = loop_asm(a.binary, syms, kernel, label)
        n = len(asm) - 1
        # the Cortex-A72 has no SDOT: tract picks the sdot kernel only where the CPU reports it
        cyc = [None if dot and c == "cortex-a72" else mca(a.mca, c, asm) for c, _ in CPUS]
        cell = lambda x, f: "—" if x is None else f(x)
        print(f"| `{kernel}` `{label}` | {n} | {macs} | "
              + " | ".join(cell(x, lambda x: f"{x:.1f}") for x in cyc) + " | "
              + " | ".join(cell(x, lambda x: f"{macs / x:.1f}") for x in cyc) + " |")


if __name__ == "__main__":
    main()
