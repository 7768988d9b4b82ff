#!/usr/bin/env python3
"""Pi 4 / Pi 5 latency estimates from qemu instruction counts (cross/insn/run.sh --json output).

    estimate.py BINARY NAME=A72.json,A76.json [NAME=...]

Each pass's instructions are grouped by function: the matrix kernels (tract's assembly,
`*_mmm_*`, with their store phases), the activation packing for them (`pack*`, and tipedge's
`packing.rs`), the depthwise convolutions, and everything else (element-wise ops, the product
driver, the executor). The kernels run at the rate llvm-mca gives for their inner loops on each
core (kernel_loops.py: instructions per cycle of the loop); everything else at 1 to 2
instructions per cycle, a range, since nothing here models it. Clock: Pi 4 1.5 GHz (Cortex-A72),
Pi 5 2.4 GHz (Cortex-A76). The estimate ignores cache misses and memory bandwidth: it is a floor
for compute-bound passes, not a measurement; a board is needed for that (`tipedge bench encoder`).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernel_loops  # noqa: E402

CLOCK = {"cortex-a72": 1.5e9, "cortex-a76": 2.4e9}
# qemu's CPU name → the llvm-mca model standing in for it (cross/mca/analyse.py)
MCA_CPU = {"cortex-a72": "cortex-a72", "cortex-a76": "neoverse-n1"}
# qemu's CPU → the int8 kernel tract picks on it; the f32 kernel is the same on both
INT8_KERNEL = {"cortex-a72": "arm64simd_mmm_i32_8x8_0", "cortex-a76": "arm64simd_mmm_i32_8x8_dot"}
F32_KERNEL = "arm64simd_mmm_f32_8x8_gen"


def group(name):
    if "_mmm_i32_" in name or name.startswith("non_linear"):
        return "i32 kernels"
    if "_mmm_f32_" in name:
        return "f32 kernels"
    if "::pack::" in name or "::packing::" in name or "pack" in name.split("::")[-1]:
        return "packing"
    if "depthwise" in name:
        return "depthwise"
    return "other"


def ipc(rates, cpu, kernel):
    instructions, _macs, cycles = rates[(MCA_CPU[cpu], kernel)]
    return instructions / cycles


def main():
    binary, specs = sys.argv[1], sys.argv[2:]
    rates, _ = kernel_loops.loop_rates(binary)
    print("| graph | CPU | instructions per pass (M) | i32 kernels | f32 kernels | packing | depthwise | other | estimate ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for spec in specs:
        name, files = spec.split("=", 1)
        for path, cpu in zip(files.split(","), ("cortex-a72", "cortex-a76")):
            d = json.load(open(path))
            groups = {}
            for s in d["symbols"]:
                g = group(s["name"])
                groups[g] = groups.get(g, 0) + s["instructions"]
            i32_ipc = ipc(rates, cpu, INT8_KERNEL[cpu])
            f32_ipc = ipc(rates, cpu, F32_KERNEL)
            fixed = groups.get("i32 kernels", 0) / i32_ipc + groups.get("f32 kernels", 0) / f32_ipc
            rest = sum(v for k, v in groups.items() if "kernels" not in k)
            lo, hi = (fixed + rest / 2) / CLOCK[cpu] * 1e3, (fixed + rest / 1) / CLOCK[cpu] * 1e3
            cells = [f"{groups.get(g, 0) / 1e6:.1f}" for g in ("i32 kernels", "f32 kernels", "packing", "depthwise", "other")]
            print(f"| {name} | {cpu} | {d['total'] / 1e6:.1f} | " + " | ".join(cells) + f" | {lo:.0f}–{hi:.0f} |")
    print()
    print("Kernel loop IPC (llvm-mca): " + ", ".join(
        f"{c} {k} {n / cycles:.2f}" for (c, k), (n, _, cycles) in sorted(rates.items())))


if __name__ == "__main__":
    main()
