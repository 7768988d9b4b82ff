#!/usr/bin/env python3
"""llvm-mca's cycles for the inner loops of tract's aarch64 matrix kernels, as linked in BINARY.

    kernel_loops.py BINARY

For each kernel (f32 8x8, i32 8x8 with smlal, i32 8x8 with sdot) it disassembles the loop between
its label and the next label of the binary (aarch64-linux-gnu-objdump) and runs llvm-mca on it for
the CPUs cross/mca/analyse.py models (Cortex-A72 for the Pi 4; Neoverse-N1, the Pi 5's
Cortex-A76 core, when the installed llvm-mca has it), with analyse.py's runner. It prints
instructions, multiply-accumulates and cycles per iteration: the steady-state rate of the
products when their operands are in L1.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mca"))
import analyse  # noqa: E402  (cross/mca/analyse.py: mca_binaries, mca)

# (kernel symbol prefix, loop label, MACs per loop iteration, needs dotprod)
LOOPS = [
    ("arm64simd_mmm_f32_8x8_gen", ".packed_packed_loop_4", 8 * 8 * 4, False),
    ("arm64simd_mmm_i32_8x8_0", ".packed_packed_loop_1_i8i8", 8 * 8, False),
    ("arm64simd_mmm_i32_8x8_dot", ".packed_packed_loop_1_i8i8", 8 * 8 * 4, True),
]


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


def loop_rates(binary):
    """{(mcpu, kernel prefix): (instructions, MACs, cycles) per loop iteration}, and the CPUs
    modelled as analyse.mca_binaries() gives them."""
    syms = symbols(binary)
    cpus = analyse.mca_binaries()
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kernel, label, macs, dot in LOOPS:
            asm = loop_asm(binary, syms, kernel, label)
            path = os.path.join(tmp, kernel + ".s")
            with open(path, "w") as f:
                f.write("\n".join(asm) + "\n")
            for cpu, _, mca in cpus:
                # the Cortex-A72 has no SDOT: tract picks the sdot kernel only where the CPU has it
                if not (dot and cpu == "cortex-a72"):
                    rates[(cpu, kernel)] = (len(asm) - 1, macs, analyse.mca(mca, cpu, path)[0])
    return rates, cpus


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    a = ap.parse_args()
    rates, cpus = loop_rates(a.binary)
    print("| kernel loop | CPU | instructions | MACs | cycles | MACs/cycle |")
    print("|---|---|---:|---:|---:|---:|")
    for kernel, label, _, _ in LOOPS:
        for cpu, desc, _ in cpus:
            if (cpu, kernel) in rates:
                n, macs, cycles = rates[(cpu, kernel)]
                print(f"| `{kernel}` `{label}` | {desc} | {n} | {macs} | {cycles:.1f} | {macs / cycles:.1f} |")


if __name__ == "__main__":
    main()
