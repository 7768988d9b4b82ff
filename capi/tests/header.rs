//! The committed header, include/tipedge.h, is what cbindgen makes of src/lib.rs with
//! cbindgen.toml. After changing the ABI, regenerate it:
//! `TIPEDGE_WRITE_HEADER=1 cargo test -p tipedge-capi --test header`.

use std::path::Path;

#[test]
fn the_committed_header_is_cbindgens_output() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen parses src/lib.rs")
        .write(&mut generated);
    let path = crate_dir.join("include/tipedge.h");
    if std::env::var_os("TIPEDGE_WRITE_HEADER").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is not cbindgen's output for src/lib.rs: regenerate it with \
         TIPEDGE_WRITE_HEADER=1 cargo test -p tipedge-capi --test header",
        path.display()
    );
}
