//! Arbitrary bytes into the adapter pack reader: `Pack::from_bytes` and `inspect_bytes` must
//! return Ok or Err, never panic or read out of bounds; whatever opens must be usable by the
//! kernel.
//!
//! Random bytes almost never carry valid crc32c checksums, which would leave everything after
//! the header checksum unexplored. So when the first input byte is odd, the target first
//! recomputes every checksum the way FORMAT.md specifies (over the remaining bytes), and the
//! semantic checks (counts, offsets, labels, values, names) are what must hold.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tipedge::adapter::ScoreScratch;
use tipedge::kernel::{Kernel, Scratch};
use tipedge::pack::{inspect_bytes, Expect, Pack, HEADER_LEN};

const ENTRY_LEN: usize = 32;
const HEADER_CRC_AT: usize = 252;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Makes the section and header checksums valid, as far as the table can be read.
fn fix_checksums(b: &mut [u8]) {
    if b.len() < HEADER_LEN {
        return;
    }
    let count = u32_at(b, 20) as usize;
    if count > 16 || HEADER_LEN + count * ENTRY_LEN > b.len() {
        return;
    }
    for i in 0..count {
        let e = HEADER_LEN + i * ENTRY_LEN;
        let off = u64_at(b, e + 8);
        let end = off.saturating_add(u64_at(b, e + 16));
        if end <= b.len() as u64 {
            let crc = crc32c::crc32c(&b[off as usize..end as usize]);
            b[e + 4..e + 8].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&b[..HEADER_CRC_AT]),
        &b[HEADER_LEN..HEADER_LEN + count * ENTRY_LEN],
    );
    b[HEADER_CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        fix_checksums(&mut bytes);
    }
    match Pack::from_bytes(&bytes, &Expect::any()) {
        Ok(pack) => {
            // Everything a caller can reach must work on a pack that opened.
            let keys = pack.keys();
            let _ = (pack.labels(), pack.class_names(), pack.text_classifier());
            let mut scratch = Scratch::new(keys.dim());
            let q = vec![0.5f32; keys.dim()];
            let mut out = vec![0.0; keys.n_classes()];
            Kernel::scalar()
                .class_affinity(&q, &keys, pack.params().beta, &mut scratch, &mut out)
                .expect("a verified pack scores");
            // And the whole model, with its head (a GDA layer when the pack has one).
            let _ = (pack.head(), pack.gda(), pack.choice());
            let mut scores = ScoreScratch::new(keys.dim(), keys.n_classes());
            pack.model()
                .logits_batch(&Kernel::scalar(), &mut scores, &q, &mut out)
                .expect("a verified pack's model scores");
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "multi-line refusal: {e}"),
    }
    if let Ok(report) = inspect_bytes(&bytes) {
        let _ = report.to_string();
    }
});
