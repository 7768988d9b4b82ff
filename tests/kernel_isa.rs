//! Which kernel a CPU gets: the dispatch, not the arithmetic (that is `tests/kernel.rs` and the
//! unit tests in `src/kernel/aarch64/`).
//!
//! `TIPEDGE_EXPECT_ISA` names the ISA [`Kernel::detect`] must pick on this machine.
//! `cross/test-aarch64.sh` sets it for each emulated CPU (`neon` under `qemu-aarch64 -cpu
//! cortex-a72`, the Raspberry Pi 4; `neon-dotprod` under `-cpu cortex-a76`, the Pi 5), so a
//! detection bug cannot hide behind a silently slower kernel that still passes every accuracy
//! test. Unset, only the invariants that hold everywhere are checked.
//!
//! Runs without the runtime: `cargo test --no-default-features --test kernel_isa`.

use tipedge::kernel::{Isa, Kernel};

#[test]
fn detect_picks_the_expected_isa() {
    let detected = Kernel::detect().isa();
    let available: Vec<&str> = Kernel::available().iter().map(|k| k.isa().name()).collect();
    println!(
        "detect() picks {detected}; available: {}",
        available.join(", ")
    );
    match std::env::var("TIPEDGE_EXPECT_ISA") {
        Ok(want) => {
            let want: Isa = want
                .parse()
                .unwrap_or_else(|e| panic!("TIPEDGE_EXPECT_ISA: {e}"));
            assert_eq!(
                detected, want,
                "this CPU should get the {want} kernel (available: {available:?})"
            );
        }
        Err(_) => println!("TIPEDGE_EXPECT_ISA unset: no expectation checked"),
    }
}

/// On aarch64 NEON is always there, and the SDOT kernel exactly when the CPU reports dotprod.
#[cfg(target_arch = "aarch64")]
#[test]
fn aarch64_kernels_follow_the_cpu_features() {
    assert!(
        Kernel::with_isa(Isa::Neon).is_some(),
        "NEON is baseline on aarch64"
    );
    let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
    assert_eq!(Kernel::with_isa(Isa::NeonDotprod).is_some(), dotprod);
    let best = if dotprod { Isa::NeonDotprod } else { Isa::Neon };
    assert_eq!(Kernel::detect().isa(), best);
    for isa in [Isa::Avx2, Isa::Avx512Vnni] {
        assert!(Kernel::with_isa(isa).is_none(), "{isa} on aarch64");
    }
}
