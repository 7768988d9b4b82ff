//! The compiled form of a graph: what `tipedge compile` writes once beside an ONNX graph so that
//! later loads skip the ONNX work.
//!
//! Loading an ONNX graph reads and parses the protobuf (which holds every weight twice in memory
//! for a moment), types and declutters it; only then does tract optimise it for this CPU. The
//! compiled form is the decluttered typed model (after the f16 transform for `--precision f16`)
//! written as tract's NNEF with tract's extensions, an uncompressed tar whose tensors are raw
//! bytes: loading it is reading the tensors and optimising. tract cannot serialise an optimised
//! model (its ops are specific to the CPU), so the optimisation still happens at every load.
//!
//! Beside `image.onnx`, for one batch size and precision:
//!
//! - `image.b1-f32.nnef.tar`: the model;
//! - `image.b1-f32.nnef.json`: its record ([`Record`]): the sha256 of the tar, the sha256 of the
//!   ONNX graph it was made from (which must be the one the graph's sidecar names), the batch
//!   size, the precision and tract's version.
//!
//! A graph is loaded from its compiled form only when the record matches all of these and the
//! tar's sha256 matches the record (computed in a second thread while tract parses and optimises
//! the model, which is thrown away if the hash disagrees); otherwise the ONNX
//! graph is loaded as before and the reason is kept for the caller to show
//! ([`ImageEncoder::load_note`](super::ImageEncoder::load_note)): a stale or damaged compiled
//! file costs start-up time, never a wrong model.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tract_nnef::framework::Nnef;
use tract_onnx::prelude::*;

use super::graph::RunOptions;
use crate::error::{io_reason, tract_reason, Error, Result};
use crate::pack::write_atomically_as;
use crate::sidecar::Sidecar;

/// The tract release the compiled forms are written with and for (pinned `=0.23.9` in
/// Cargo.toml; a test checks that they agree). NNEF with tract's extensions is not promised to
/// load in another release, so a record naming another one is not used.
pub(crate) const TRACT_VERSION: &str = "0.23.9";

const FORMAT: &str = "tipedge-compiled/1";

/// The JSON record beside a compiled graph.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub format: String,
    /// File name of the ONNX graph it was made from, and that graph's sha256.
    pub graph: String,
    pub graph_sha256: String,
    /// File name of the compiled model (beside the record), and its sha256.
    pub file: String,
    pub sha256: String,
    pub batch: usize,
    pub precision: String,
    pub tract: String,
}

/// What `tipedge compile` wrote for one graph.
#[derive(Debug, Clone, Serialize)]
pub struct Compiled {
    pub graph: PathBuf,
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub batch: usize,
    pub precision: &'static str,
    /// Seconds to load the ONNX graph and write the compiled form.
    pub seconds: f64,
}

/// The compiled model and record paths for `graph` at `opts`' batch and precision.
pub(crate) fn paths(graph: &Path, opts: &RunOptions) -> (PathBuf, PathBuf) {
    let stem = graph
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = format!("{stem}.b{}-{}.nnef", opts.batch, opts.precision.name());
    (
        graph.with_file_name(format!("{base}.tar")),
        graph.with_file_name(format!("{base}.json")),
    )
}

/// tract's NNEF with its core and ONNX extensions, plus the operators tract 0.23.9 has no NNEF
/// form for, registered under tipedge's own names ([`ops`]).
pub(crate) fn nnef() -> Nnef {
    use tract_onnx::prelude::WithOnnx;
    tract_nnef::nnef()
        .with_onnx()
        .with_registry(ops::registry())
}

/// NNEF forms for what tract's declutter leaves in tipedge's graphs that tract 0.23.9 cannot
/// write: each is dumped as an invocation of a `tipedge_…` primitive carrying the operator's
/// parameters (f32 written in Rust's shortest round-trip form, so they load bit for bit) and
/// loaded back as the same operator.
///
/// - `GeluExact`: what the declutter makes of ONNX's `Erf`-based GELU in CLIP's MLPs;
/// - `QuantizeLinearI8` / `QuantizeLinearU8` / `DequantizeLinearF32`: the activations'
///   quantisation of the QOperator int8 graphs (`models/quantize.py`).
mod ops {
    use std::any::TypeId;

    use tract_nnef::internal::*;
    use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
    use tract_onnx::tract_core::ops::nn::GeluExact;
    use tract_onnx::tract_core::ops::quant::{
        DequantizeLinearF32, QuantizeLinearI8, QuantizeLinearU8,
    };

    pub(super) fn registry() -> Registry {
        let mut r = Registry::new("tipedge");
        r.register_unit_element_wise("tipedge_gelu_exact", &GeluExact {});
        let params = || {
            vec![
                TypeName::Scalar.tensor().named("input"),
                TypeName::Scalar.named("scale"),
                TypeName::Integer.named("zero_point"),
            ]
        };
        r.register_element_wise(
            "tipedge_quantize_linear_i8",
            TypeId::of::<QuantizeLinearI8>(),
            Box::new(dump_q_i8),
            params(),
            load_q_i8,
        );
        r.register_element_wise(
            "tipedge_quantize_linear_u8",
            TypeId::of::<QuantizeLinearU8>(),
            Box::new(dump_q_u8),
            params(),
            load_q_u8,
        );
        r.register_dumper(dump_dq);
        r.register_primitive(
            "tipedge_dequantize_linear_f32",
            &params(),
            &[("output", TypeName::Scalar.tensor())],
            load_dq,
        );
        r
    }

    fn quant(name: &str, ast: &IntoAst, node: &TypedNode, scale: f32, zp: i32) -> Arc<RValue> {
        let input = ast.mapping[&node.inputs[0]].clone();
        invocation(
            name,
            &[input],
            &[("scale", numeric(scale)), ("zero_point", numeric(zp))],
        )
    }

    fn element_wise<O: tract_onnx::tract_core::ops::element_wise::ElementWiseMiniOp>(
        node: &TypedNode,
    ) -> TractResult<&O> {
        node.op_as::<ElementWiseOp>()
            .and_then(|op| op.0.downcast_ref::<O>())
            .context("not the registered element-wise operator")
    }

    fn dump_q_i8(ast: &mut IntoAst, node: &TypedNode) -> TractResult<Option<Arc<RValue>>> {
        let op = element_wise::<QuantizeLinearI8>(node)?;
        let (s, z) = (op.scale, op.zero_point as i32);
        Ok(Some(quant("tipedge_quantize_linear_i8", ast, node, s, z)))
    }

    fn dump_q_u8(ast: &mut IntoAst, node: &TypedNode) -> TractResult<Option<Arc<RValue>>> {
        let op = element_wise::<QuantizeLinearU8>(node)?;
        let (s, z) = (op.scale, op.zero_point as i32);
        Ok(Some(quant("tipedge_quantize_linear_u8", ast, node, s, z)))
    }

    fn dump_dq(
        ast: &mut IntoAst,
        node: &TypedNode,
        op: &DequantizeLinearF32,
    ) -> TractResult<Option<Arc<RValue>>> {
        let name = "tipedge_dequantize_linear_f32";
        Ok(Some(quant(name, ast, node, op.scale, op.zero_point)))
    }

    /// The input, scale and zero point of an invocation.
    fn args(b: &mut ModelBuilder, inv: &ResolvedInvocation) -> TractResult<(OutletId, f32, i64)> {
        let input = inv.named_arg_as(b, "input")?;
        Ok((
            input,
            inv.named_arg_as(b, "scale")?,
            inv.named_arg_as(b, "zero_point")?,
        ))
    }

    fn load_q_i8(b: &mut ModelBuilder, inv: &ResolvedInvocation) -> TractResult<Value> {
        let (input, scale, zp) = args(b, inv)?;
        let zero_point = i8::try_from(zp).context("int8 zero point out of range")?;
        let op = QuantizeLinearI8 { scale, zero_point };
        b.wire(ElementWiseOp(Box::new(op), None), &[input])
    }

    fn load_q_u8(b: &mut ModelBuilder, inv: &ResolvedInvocation) -> TractResult<Value> {
        let (input, scale, zp) = args(b, inv)?;
        let zero_point = u8::try_from(zp).context("uint8 zero point out of range")?;
        let op = QuantizeLinearU8 { scale, zero_point };
        b.wire(ElementWiseOp(Box::new(op), None), &[input])
    }

    fn load_dq(b: &mut ModelBuilder, inv: &ResolvedInvocation) -> TractResult<Value> {
        let (input, scale, zp) = args(b, inv)?;
        let zero_point = i32::try_from(zp).context("zero point out of range")?;
        b.wire(DequantizeLinearF32 { scale, zero_point }, &[input])
    }
}

/// Writes `typed` (decluttered, for `opts`) as the compiled form of `graph`, whose verified
/// sha256 is `graph_sha256`: the tar, then its record, each atomically (a device never sees a
/// half-written file, and a record never names a tar that is not there).
pub(crate) fn write(
    graph: &Path,
    graph_sha256: &str,
    typed: &TypedModel,
    opts: &RunOptions,
) -> Result<(PathBuf, u64, String)> {
    let (tar_path, record_path) = paths(graph, opts);
    let mut bytes = Vec::new();
    // Deterministic: fixed timestamps in the tar, so the same graph, batch, precision and
    // tract compile to the same bytes (and sha256) on every machine.
    nnef()
        .write_to_tar_with_config(typed, &mut bytes, false, true)
        .map_err(|e| {
            Error::model(
                graph,
                format!("cannot write it as NNEF: {}", tract_reason(&e)),
            )
        })?;
    let sha256 = crate::sidecar::sha256_hex(&bytes);
    let record = Record {
        format: FORMAT.into(),
        graph: file_name(graph),
        graph_sha256: graph_sha256.to_ascii_lowercase(),
        file: file_name(&tar_path),
        sha256: sha256.clone(),
        batch: opts.batch,
        precision: opts.precision.name().into(),
        tract: TRACT_VERSION.into(),
    };
    let json = serde_json::to_vec_pretty(&record).expect("a record serialises");
    // The old record goes first: between the two writes no record names a tar it does not
    // describe (a load in that window takes the ONNX graph).
    match std::fs::remove_file(&record_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::model(&record_path, io_reason(&e))),
    }
    write_atomically_as(&tar_path, &bytes, |p, r| Error::model(p, r))?;
    write_atomically_as(&record_path, &json, |p, r| Error::model(p, r))?;
    Ok((tar_path, bytes.len() as u64, sha256))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What was found beside a graph.
pub(crate) enum Lookup {
    /// No record for this batch and precision: nothing was compiled for them.
    Absent,
    /// The compiled model, its record checked against the sidecar and `opts`: the decluttered
    /// typed model, the ONNX graph's sha256, and the tar's hash being checked against the record
    /// (the model may be used only after [`Verification::wait`] says yes).
    Loaded(Box<TypedModel>, String, Verification),
    /// A record exists but cannot be used: why (one line, naming the file).
    Rejected(String),
}

/// Looks for the compiled form of `graph` (described by `sidecar`) at `opts`, and loads it if
/// it can be trusted (see the module documentation).
pub(crate) fn load(graph: &Path, sidecar: &Sidecar, opts: &RunOptions) -> Lookup {
    let (tar_path, record_path) = paths(graph, opts);
    let text = match std::fs::read(&record_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Absent,
        Err(e) => return reject(&record_path, &io_reason(&e)),
    };
    let record: Record = match serde_json::from_slice(&text) {
        Ok(r) => r,
        Err(e) => return reject(&record_path, &format!("not a compiled-graph record: {e}")),
    };
    let hex64 = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex64(&record.graph_sha256) || !hex64(&record.sha256) {
        return reject(&record_path, "its sha256 fields are not 64 hex digits");
    }
    let stale = if record.format != FORMAT {
        Some(format!(
            "format {:?}, this tipedge reads {FORMAT:?}",
            record.format
        ))
    } else if record.tract != TRACT_VERSION {
        Some(format!(
            "written with tract {}, this tipedge runs {TRACT_VERSION}",
            record.tract
        ))
    } else if !record.graph_sha256.eq_ignore_ascii_case(&sidecar.sha256) {
        Some(format!(
            "made from another {} (sha256 {}…, the sidecar names {}…)",
            record.graph,
            record
                .graph_sha256
                .get(..12)
                .unwrap_or(&record.graph_sha256),
            sidecar.sha256.get(..12).unwrap_or(&sidecar.sha256)
        ))
    } else if record.batch != opts.batch || record.precision != opts.precision.name() {
        Some(format!(
            "for batch {} {}, asked for batch {} {}",
            record.batch,
            record.precision,
            opts.batch,
            opts.precision.name()
        ))
    } else if record.file != file_name(&tar_path) {
        Some(format!(
            "names {:?}, expected {:?}",
            record.file,
            file_name(&tar_path)
        ))
    } else {
        None
    };
    if let Some(why) = stale {
        return reject(
            &record_path,
            &format!("stale ({why}); run `tipedge compile` again"),
        );
    }
    // The tar is hashed in a second thread while tract parses it here and the caller optimises
    // the model; the model is used only if the hash then matches the record
    // ([`Verification::wait`]). Parsing before the hash is known trades a small risk for start-up
    // time (the hash was a sixth of a compiled ViT-B/32 int8 load, and more on a board without
    // SHA instructions such as the Pi 4): tract's tar reader checks every member header's
    // checksum and its tensor reader refuses a tensor header whose shape and byte count disagree
    // before allocating, so a flipped bit or a truncation ends in an error or in a model that is
    // thrown away. A model is never used before its hash matched.
    let verification = Verification::start(tar_path.clone(), record.sha256.clone());
    let file = match File::open(&tar_path) {
        Ok(f) => f,
        Err(e) => {
            return Lookup::Rejected(
                verification
                    .wait()
                    .err()
                    .unwrap_or_else(|| rejection(&tar_path, &io_reason(&e))),
            )
        }
    };
    match nnef().model_for_read(&mut BufReader::with_capacity(1 << 20, file)) {
        Ok(typed) => Lookup::Loaded(
            Box::new(typed),
            record.graph_sha256.to_ascii_lowercase(),
            verification,
        ),
        // A damaged file is named as such rather than by the error it caused in tract.
        Err(e) => Lookup::Rejected(verification.wait().err().unwrap_or_else(|| {
            rejection(
                &tar_path,
                &format!("tract cannot load it: {}", tract_reason(&e)),
            )
        })),
    }
}

/// The sha256 of a compiled tar, computed in its own thread.
pub(crate) struct Verification {
    tar: PathBuf,
    expected: String,
    digest: std::thread::JoinHandle<std::io::Result<String>>,
}

impl Verification {
    fn start(tar: PathBuf, expected: String) -> Verification {
        let path = tar.clone();
        let digest = std::thread::spawn(move || crate::sidecar::sha256_hex_of_file(&path));
        Verification {
            tar,
            expected,
            digest,
        }
    }

    /// Waits for the hash: `Ok` when the tar is the one its record describes, else why not
    /// (one line naming the file, as [`Lookup::Rejected`] carries it).
    pub(crate) fn wait(self) -> std::result::Result<(), String> {
        match self.digest.join() {
            Ok(Ok(d)) if d.eq_ignore_ascii_case(&self.expected) => Ok(()),
            Ok(Ok(d)) => Err(rejection(
                &self.tar,
                &format!(
                    "sha256 {}… does not match its record ({}…): damaged or replaced",
                    &d[..12],
                    self.expected.get(..12).unwrap_or(&self.expected)
                ),
            )),
            Ok(Err(e)) => Err(rejection(&self.tar, &io_reason(&e))),
            Err(_) => Err(rejection(&self.tar, "hashing it failed")),
        }
    }
}

fn reject(path: &Path, why: &str) -> Lookup {
    Lookup::Rejected(rejection(path, why))
}

fn rejection(path: &Path, why: &str) -> String {
    format!("{}: {why}; loaded the ONNX graph instead", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::Precision;

    #[test]
    fn tract_version_is_the_pinned_one() {
        let manifest = include_str!("../../Cargo.toml");
        let pin = format!("tract-onnx = {{ version = \"={TRACT_VERSION}\"");
        assert!(manifest.contains(&pin), "Cargo.toml does not pin {pin}");
    }

    #[test]
    fn paths_name_batch_and_precision() {
        let opts = RunOptions {
            precision: Precision::F16,
            batch: 4,
            threads: 1,
        };
        let (tar, json) = paths(Path::new("/m/image.onnx"), &opts);
        assert_eq!(tar, Path::new("/m/image.b4-f16.nnef.tar"));
        assert_eq!(json, Path::new("/m/image.b4-f16.nnef.json"));
    }
}
