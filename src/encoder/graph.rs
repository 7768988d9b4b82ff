//! One tract graph, loaded, checked, optimised and run. Shared by the image and text towers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::SimpleState;
use tract_onnx::tract_hir::infer::Factoid;

use crate::error::{tract_reason, Error, Result};
use crate::sidecar::Sidecar;

/// Arithmetic precision of the graph's float ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    /// tract's f32→f16 model transform (inputs and outputs converted at the boundary).
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            other => Err(format!("unknown precision {other:?} (expected f32 or f16)")),
        }
    }
}

/// How a graph is prepared and run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub precision: Precision,
    /// Fixed batch size the graph is optimised for. Shorter batches are zero-padded.
    pub batch: usize,
    /// Threads for tract's matrix products (tract-linalg `multithread-mm`); 1 = single thread.
    pub threads: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            precision: Precision::F32,
            batch: 1,
            threads: 1,
        }
    }
}

/// Time spent in one operator type of an optimised graph (see `tipedge bench encoder --profile`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpTime {
    /// tract's operator name after optimisation (e.g. `DepthWise`, `OptMatMul`).
    pub op: String,
    /// How many nodes of the graph run this operator.
    pub nodes: usize,
    /// Sum over those nodes of each node's median time per run, in ms.
    pub ms: f64,
    /// Multiply-accumulates per run, summed over the nodes, as tract counts them (its `cost()`:
    /// the products' m·k·n, a convolution's kernel volume per output value); 0 for ops that
    /// multiply-accumulate nothing.
    pub macs: u64,
    /// Values written per run (the nodes' output elements summed): the work of an element-wise
    /// op, and what a product's store phase writes.
    pub elements: u64,
    /// Matrix-kernel runs per graph run: for each product node, how many separate m × n
    /// products it makes (1 when its output is one matrix; H for a product tract loops over
    /// rows, such as a 1×1 convolution whose H and W axes were not merged).
    pub products: u64,
    /// The matrix-multiply kernels tract chose for these nodes on this CPU (products only, e.g.
    /// `avx512_mmm_i32_16x16`, `arm64simd_mmm_i32_8x8_dot`), each once, in name order.
    pub kernels: Vec<String>,
}

impl OpTime {
    /// Work counts of one node: its multiply-accumulates, output elements, matrix products and
    /// kernel names.
    fn work(model: &TypedModel, node: &TypedNode) -> (u64, u64, u64, Vec<String>) {
        use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;
        use tract_onnx::tract_core::ops::Cost;
        let concrete = |d: &TDim| d.to_i64().ok().and_then(|v| u64::try_from(v).ok());
        let macs = model
            .node_input_facts(node.id)
            .and_then(|facts| node.op.cost(&facts))
            .map(|costs| {
                costs
                    .iter()
                    .filter(|(c, _)| matches!(c, Cost::FMA(_)))
                    .filter_map(|(_, n)| concrete(n))
                    .sum()
            })
            .unwrap_or(0);
        let elements = node
            .outputs
            .iter()
            .filter_map(|o| {
                o.fact
                    .shape
                    .as_concrete()
                    .map(|s| s.iter().product::<usize>())
            })
            .map(|n| n as u64)
            .sum();
        let (products, kernels) = node
            .op_as::<OptMatMul>()
            .map(|op| {
                let loops = (op.c_fact.shape.iter().enumerate())
                    .filter(|(axis, _)| Some(*axis) != op.c_m_axis && Some(*axis) != op.c_n_axis)
                    .map(|(_, d)| concrete(d).unwrap_or(1))
                    .product();
                let names = op.mmm.iter().map(|k| k.name().to_string()).collect();
                (loops, names)
            })
            .unwrap_or_default();
        (macs, elements, products, kernels)
    }
}

/// Where a [`Graph`] was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// The ONNX graph; nothing compiled for this batch and precision.
    Onnx,
    /// The compiled form at this path.
    Compiled(PathBuf),
    /// The ONNX graph, because the compiled form could not be used: why.
    OnnxNotCompiled(String),
}

pub(crate) struct Graph {
    plan: Arc<TypedRunnableModel>,
    pub(crate) path: PathBuf,
    pub(crate) sha256: String,
    pub(crate) batch: usize,
    pub(crate) precision: Precision,
    /// The graph computes on 8-bit integer tensors (QOperator int8: QLinearMatMul/Conv,
    /// MatMulInteger, ...), read from the graph itself, not from the sidecar.
    pub(crate) int8: bool,
    /// Where the graph was loaded from.
    pub(crate) source: Source,
    executor: Executor,
    item_shape: Vec<usize>,
    input_dt: DatumType,
    /// The graph has a second input: one i64 per item (a prompt tower's EOT positions).
    positions: bool,
    dim: usize,
}

/// A graph's inputs: the main one (`[batch, item_shape…]` of `dt`) and, for a prompt tower, a
/// second `[batch]` i64 input of per-item positions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inputs<'a> {
    pub(crate) dt: DatumType,
    pub(crate) item_shape: &'a [usize],
    pub(crate) positions: bool,
}

impl<'a> Inputs<'a> {
    pub(crate) fn one(dt: DatumType, item_shape: &'a [usize]) -> Inputs<'a> {
        Inputs {
            dt,
            item_shape,
            positions: false,
        }
    }
}

impl Graph {
    /// Loads `path` for inputs `[batch, item_shape…]` of type `input_dt`: from its compiled form
    /// when one matching `opts` is beside it and checks out (see [`compiled`](super::compiled)),
    /// else from the ONNX graph.
    pub(crate) fn load(
        path: &Path,
        sidecar: &Sidecar,
        inputs: Inputs<'_>,
        opts: &RunOptions,
    ) -> Result<Graph> {
        if opts.batch == 0 {
            return Err(Error::Invalid("batch size must be at least 1".into()));
        }
        use super::compiled::Lookup;
        // Why the ONNX graph is loaded although a compiled form is beside it, if one is.
        let not_compiled = match super::compiled::load(path, sidecar, opts) {
            Lookup::Loaded(typed, sha256, verification) => {
                let (tar, _) = super::compiled::paths(path, opts);
                let source = Source::Compiled(tar);
                let graph = Self::optimise(path, sidecar, inputs, opts, *typed, sha256, source);
                match verification.wait() {
                    Ok(()) => return graph,
                    Err(why) => Some(why),
                }
            }
            Lookup::Absent => None,
            Lookup::Rejected(why) => Some(why),
        };
        let (typed, sha256) = typed_from_onnx(path, sidecar, inputs, opts)?;
        let source = not_compiled.map_or(Source::Onnx, Source::OnnxNotCompiled);
        Self::optimise(path, sidecar, inputs, opts, typed, sha256, source)
    }

    /// Checks the typed model's input and output against the sidecar and `opts`, optimises it
    /// for this CPU and plans it.
    fn optimise(
        path: &Path,
        sidecar: &Sidecar,
        inputs: Inputs<'_>,
        opts: &RunOptions,
        typed: TypedModel,
        sha256: String,
        source: Source,
    ) -> Result<Graph> {
        let Inputs {
            dt: input_dt,
            item_shape,
            positions,
        } = inputs;
        let fail = |stage: &str, e: TractError| {
            Error::model(path, format!("{stage}: {}", tract_reason(&e)))
        };
        let int8 = typed.nodes().iter().any(|n| {
            n.outputs.iter().any(|o| {
                matches!(
                    o.fact.datum_type.unquantized(),
                    DatumType::I8 | DatumType::U8
                )
            })
        });
        let mut shape = vec![opts.batch];
        shape.extend_from_slice(item_shape);
        let input = typed.input_fact(0).map_err(|e| fail("no input", e))?;
        if input.shape.as_concrete() != Some(&shape[..]) {
            return Err(Error::model(
                path,
                format!("graph input {:?}, expected {shape:?}", input.shape),
            ));
        }
        let typed = super::optimise::optimise(typed).map_err(|e| fail("optimisation failed", e))?;

        let out = typed.output_fact(0).map_err(|e| fail("no output", e))?;
        let dims: Vec<Option<usize>> = out
            .shape
            .iter()
            .map(|d| d.to_i64().ok().map(|v| v as usize))
            .collect();
        if dims != [Some(opts.batch), Some(sidecar.embed_dim)] {
            return Err(Error::model(
                path,
                format!(
                    "graph output shape {:?} disagrees with its sidecar (expected [{}, {}])",
                    out.shape, opts.batch, sidecar.embed_dim
                ),
            ));
        }
        let plan = typed
            .into_runnable()
            .map_err(|e| fail("cannot plan the graph", e))?;
        super::optimise::release_freed_memory();
        let executor = if opts.threads > 1 {
            Executor::multithread(opts.threads)
        } else {
            Executor::SingleThread
        };
        Ok(Graph {
            plan,
            path: path.to_path_buf(),
            sha256,
            batch: opts.batch,
            precision: opts.precision,
            int8,
            source,
            executor,
            item_shape: item_shape.to_vec(),
            input_dt,
            positions,
            dim: sidecar.embed_dim,
        })
    }

    /// Why the compiled form beside the graph was not used, if one was there and was not.
    pub(crate) fn load_note(&self) -> Option<&str> {
        match &self.source {
            Source::OnnxNotCompiled(why) => Some(why),
            _ => None,
        }
    }

    pub(crate) fn compiled_from(&self) -> Option<&Path> {
        match &self.source {
            Source::Compiled(p) => Some(p),
            _ => None,
        }
    }

    /// Time per operator type, median over `runs` runs of a zero input after 2 warm-up runs
    /// (tract's plan evaluated node by node), sorted by time, most expensive first.
    pub(crate) fn profile(&self, runs: usize) -> Result<Vec<OpTime>> {
        use std::collections::BTreeMap;
        use tract_onnx::tract_core::plan::eval;
        let dt = match self.precision {
            Precision::F16 if self.input_dt == f32::datum_type() => f16::datum_type(),
            _ => self.input_dt,
        };
        let input = Tensor::zero_dt(dt, &self.shape()).map_err(|e| self.err(e))?;
        let mut state = SimpleState::new(&self.plan).map_err(|e| self.err(e))?;
        let model = self.plan.model();
        let mut samples: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for run in 0..runs.max(1) + 2 {
            multithread_tract_scope(self.executor.clone(), || {
                state.run_plan_with_eval(tvec!(input.clone().into()), |ctx, st, node, inputs| {
                    let t = std::time::Instant::now();
                    let out = eval(ctx, st, node, inputs);
                    if run >= 2 {
                        samples
                            .entry(node.id)
                            .or_default()
                            .push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    out
                })
            })
            .map_err(|e| self.err(e))?;
        }
        let mut by_op: BTreeMap<String, OpTime> = BTreeMap::new();
        for (id, mut v) in samples {
            v.sort_by(f64::total_cmp);
            let node = model.node(id);
            let op = node.op.name().to_string();
            let entry = by_op.entry(op.clone()).or_insert(OpTime {
                op,
                nodes: 0,
                ms: 0.0,
                macs: 0,
                elements: 0,
                products: 0,
                kernels: Vec::new(),
            });
            let (macs, elements, products, kernels) = OpTime::work(model, node);
            entry.nodes += 1;
            entry.ms += v[v.len() / 2];
            entry.macs += macs;
            entry.elements += elements;
            entry.products += products;
            for k in kernels {
                if let Err(at) = entry.kernels.binary_search(&k) {
                    entry.kernels.insert(at, k);
                }
            }
        }
        let mut rows: Vec<OpTime> = by_op.into_values().collect();
        rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(rows)
    }

    /// A run state for this graph: tract's per-run state (op states, value slots) and the input
    /// tensor, both reused run after run.
    pub(crate) fn state(&self) -> Result<RunState> {
        let dt = match self.precision {
            Precision::F16 if self.input_dt == f32::datum_type() => f16::datum_type(),
            _ => self.input_dt,
        };
        let input = Tensor::zero_dt(dt, &self.shape()).map_err(|e| self.err(e))?;
        Ok(RunState {
            state: SimpleState::new(&self.plan).map_err(|e| self.err(e))?,
            input: Arc::new(input),
            dt,
            replaced: 0,
        })
    }

    /// Runs one full batch: `input` holds `batch × item` values (converted to the graph's input
    /// type on the way into the tensor), `out` receives the first `out.len() / dim` rows of the
    /// `batch × dim` output. Nothing of ours is allocated; what tract allocates inside its run
    /// is its own (measured in tests/alloc.rs).
    pub(crate) fn run_into<T: InputValue>(
        &self,
        rs: &mut RunState,
        input: &[T],
        out: &mut [f32],
    ) -> Result<()> {
        if self.positions {
            return Err(Error::Invalid(format!(
                "{}: the graph also takes positions",
                self.path.display()
            )));
        }
        self.run_values(rs, input, None, out)
    }

    fn run_values<T: InputValue>(
        &self,
        rs: &mut RunState,
        input: &[T],
        second: Option<TValue>,
        out: &mut [f32],
    ) -> Result<()> {
        if input.len() != self.batch * self.item_len() {
            return Err(Error::Invalid(format!(
                "{} input values for a batch of {} items of {}",
                input.len(),
                self.batch,
                self.item_len()
            )));
        }
        if out.len() > self.batch * self.dim || !out.len().is_multiple_of(self.dim) {
            return Err(Error::Invalid(format!(
                "output buffer of {} values is not up to {} rows of {}",
                out.len(),
                self.batch,
                self.dim
            )));
        }
        if Arc::get_mut(&mut rs.input).is_none() {
            // tract kept a reference to the last input (it does not in 0.23.9): start afresh.
            let t = Tensor::zero_dt(rs.dt, &self.shape()).map_err(|e| self.err(e))?;
            rs.input = Arc::new(t);
            rs.replaced += 1;
        }
        let tensor = Arc::get_mut(&mut rs.input).expect("unique: replaced above if shared");
        let mut view = tensor.try_as_plain_ram_mut().map_err(|e| self.err(e))?;
        T::write(input, &mut view).map_err(|e| self.err(e))?;
        let mut values = tvec!(TValue::from_const(Arc::clone(&rs.input)));
        values.extend(second);
        let state = &mut rs.state;
        let result = multithread_tract_scope(self.executor.clone(), || state.run(values))
            .map_err(|e| self.err(e))?;
        let feats = result[0].cast_to::<f32>().map_err(|e| self.err(e))?;
        let view = feats.try_as_plain_ram().map_err(|e| self.err(e))?;
        let values = view.as_slice::<f32>().map_err(|e| self.err(e))?;
        out.copy_from_slice(&values[..out.len()]);
        Ok(())
    }

    /// Runs `n` items through the fixed-batch plan in chunks of the batch size (the last one
    /// zero-padded) with one run state. Returns `n × dim` features.
    pub(crate) fn run_all<T: InputValue>(&self, input: &[T], n: usize) -> Result<Vec<f32>> {
        self.run_chunks(input, None, n)
    }

    /// [`run_all`](Self::run_all) for a graph with a second input: one i64 position per item.
    pub(crate) fn run_all_with_positions(
        &self,
        input: &[f32],
        positions: &[i64],
        n: usize,
    ) -> Result<Vec<f32>> {
        self.run_chunks(input, Some(positions), n)
    }

    fn run_chunks<T: InputValue>(
        &self,
        input: &[T],
        positions: Option<&[i64]>,
        n: usize,
    ) -> Result<Vec<f32>> {
        let item = self.item_len();
        if input.len() != n * item || positions.is_some_and(|p| p.len() != n) {
            return Err(Error::Invalid(format!(
                "{} input values{} for {n} items of {item}",
                input.len(),
                positions.map_or(String::new(), |p| format!(" and {} positions", p.len()))
            )));
        }
        if positions.is_some() != self.positions {
            return Err(Error::Invalid(format!(
                "{}: the graph takes {} positions",
                self.path.display(),
                if self.positions { "per-item" } else { "no" }
            )));
        }
        let mut rs = self.state()?;
        let mut out = vec![0f32; n * self.dim];
        let mut chunk = vec![T::default(); self.batch * item];
        let mut pos = vec![0i64; self.batch];
        for start in (0..n).step_by(self.batch) {
            let count = (n - start).min(self.batch);
            chunk[..count * item].copy_from_slice(&input[start * item..(start + count) * item]);
            chunk[count * item..].fill(T::default());
            let second = positions.map(|p| {
                pos[..count].copy_from_slice(&p[start..start + count]);
                pos[count..].fill(0);
                tract_ndarray::Array1::from_vec(pos.clone())
                    .into_tensor()
                    .into_tvalue()
            });
            self.run_values(
                &mut rs,
                &chunk,
                second,
                &mut out[start * self.dim..(start + count) * self.dim],
            )?;
        }
        Ok(out)
    }

    fn shape(&self) -> Vec<usize> {
        let mut s = vec![self.batch];
        s.extend_from_slice(&self.item_shape);
        s
    }

    fn err(&self, e: TractError) -> Error {
        Error::Inference(format!("{}: {}", self.path.display(), tract_reason(&e)))
    }

    pub(crate) fn item_len(&self) -> usize {
        self.item_shape.iter().product()
    }
}

/// A value fed to a graph: f32 pixels (written as f16 into a graph run at f16 precision) or
/// i64 token ids.
pub(crate) trait InputValue: Datum + Copy + Default {
    fn write(src: &[Self], dst: &mut PlainViewMut<'_>) -> TractResult<()>;
}

impl InputValue for f32 {
    fn write(src: &[f32], dst: &mut PlainViewMut<'_>) -> TractResult<()> {
        if dst.datum_type() == f16::datum_type() {
            for (o, &v) in dst.as_slice_mut::<f16>()?.iter_mut().zip(src) {
                *o = f16::from_f32(v);
            }
        } else {
            dst.as_slice_mut::<f32>()?.copy_from_slice(src);
        }
        Ok(())
    }
}

impl InputValue for i64 {
    fn write(src: &[i64], dst: &mut PlainViewMut<'_>) -> TractResult<()> {
        dst.as_slice_mut::<i64>()?.copy_from_slice(src);
        Ok(())
    }
}

/// What one graph run needs besides the plan, kept between runs: tract's state and the input
/// tensor (of the graph's input type: f32, f16 at f16 precision, or i64 token ids).
pub(crate) struct RunState {
    state: TypedSimpleState,
    input: Arc<Tensor>,
    dt: DatumType,
    /// How often the input tensor had to be made afresh (an allocation) because tract still
    /// held the last one.
    pub(crate) replaced: u64,
}

/// The ONNX graph at `path`, verified against its sidecar, with its input fixed to
/// `[batch, item_shape…]`, typed, decluttered and (for f16) translated: what is optimised at
/// load, and what `tipedge compile` writes. Returns it with the graph's sha256.
pub(crate) fn typed_from_onnx(
    path: &Path,
    sidecar: &Sidecar,
    inputs: Inputs<'_>,
    opts: &RunOptions,
) -> Result<(TypedModel, String)> {
    let Inputs {
        dt: input_dt,
        item_shape,
        positions,
    } = inputs;
    let bytes = std::fs::read(path).map_err(|e| Error::model(path, crate::error::io_reason(&e)))?;
    let sha256 = sidecar.verify_graph(path, &bytes)?;
    let fail =
        |stage: &str, e: TractError| Error::model(path, format!("{stage}: {}", tract_reason(&e)));
    let mut model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(|e| fail("not a loadable ONNX graph", e))?;
    drop(bytes);
    let expect = 1 + usize::from(positions);
    if model.inputs.len() != expect {
        return Err(Error::model(
            path,
            format!(
                "graph has {} inputs, tipedge expects {expect}",
                model.inputs.len()
            ),
        ));
    }
    check_declared_input(path, &model, item_shape)?;

    let mut shape = vec![opts.batch];
    shape.extend_from_slice(item_shape);
    model
        .set_input_fact(0, InferenceFact::dt_shape(input_dt, shape.clone()))
        .map_err(|e| fail("cannot fix the input shape", e))?;
    if positions {
        model
            .set_input_fact(1, InferenceFact::dt_shape(i64::datum_type(), [opts.batch]))
            .map_err(|e| fail("cannot fix the positions input", e))?;
    }
    let mut typed = model
        .into_typed()
        .map_err(|e| fail(&format!("graph does not accept input {shape:?}"), e))?
        .into_decluttered()
        .map_err(|e| fail("declutter failed", e))?;
    if opts.precision == Precision::F16 {
        let t = tract_onnx::tract_core::transform::get_transform("f32_to_f16")
            .map_err(|e| fail("f16 transform", e))?
            .ok_or_else(|| Error::model(path, "tract has no f32_to_f16 transform"))?;
        t.transform(&mut typed)
            .map_err(|e| fail("f16 transform failed", e))?;
    }
    Ok((typed, sha256))
}

/// Compares the graph's declared input (where it declares one) with what the sidecar implies,
/// so that a graph exported for 256 px next to a sidecar saying 224 is refused with a clear line.
fn check_declared_input(path: &Path, model: &InferenceModel, item_shape: &[usize]) -> Result<()> {
    let fact = model
        .input_fact(0)
        .map_err(|e| Error::model(path, format!("no input: {}", tract_reason(&e))))?;
    if let Some(rank) = fact.shape.rank().concretize() {
        if rank as usize != item_shape.len() + 1 {
            return Err(Error::model(
                path,
                format!(
                    "graph input has rank {rank}, its sidecar implies rank {} ([batch, {}])",
                    item_shape.len() + 1,
                    item_shape
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        for (axis, (dim, want)) in fact.shape.dims().skip(1).zip(item_shape).enumerate() {
            if let Some(Ok(have)) = dim.concretize().map(|d| d.to_i64()) {
                if have as usize != *want {
                    return Err(Error::model(
                        path,
                        format!(
                            "graph input axis {} is {have}, its sidecar says {want}",
                            axis + 1
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}
