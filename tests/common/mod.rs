//! Shared test helpers: fixture paths, a minimal .npy reader, vector comparisons.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn fixture(rel: &str) -> PathBuf {
    repo("models/fixtures").join(rel)
}

pub fn reference(name: &str) -> PathBuf {
    fixture("reference").join(name)
}

/// A C-ordered array read from a version-1 .npy file (`<f4`, `<f8` or `<i8`).
pub struct Npy<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

fn npy_payload(path: &Path, descr: &str) -> (Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{}: not an .npy file",
        path.display()
    );
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        v => panic!("{}: npy version {v}", path.display()),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains(&format!("'descr': '{descr}'")),
        "{}: {header}",
        path.display()
    );
    assert!(
        header.contains("'fortran_order': False"),
        "{}: {header}",
        path.display()
    );
    let shape_src = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_src
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (shape, bytes[start + header_len..].to_vec())
}

fn read<T, const W: usize>(path: &Path, descr: &str, from_le: fn([u8; W]) -> T) -> Npy<T> {
    let (shape, raw) = npy_payload(path, descr);
    let data: Vec<T> = raw
        .chunks_exact(W)
        .map(|c| from_le(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        data.len(),
        shape.iter().product::<usize>(),
        "{}",
        path.display()
    );
    Npy { shape, data }
}

pub fn read_f32(path: &Path) -> Npy<f32> {
    read(path, "<f4", f32::from_le_bytes)
}

pub fn read_f64(path: &Path) -> Npy<f64> {
    read(path, "<f8", f64::from_le_bytes)
}

pub fn read_i64(path: &Path) -> Npy<i64> {
    read(path, "<i8", i64::from_le_bytes)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A child process whose stdout and stderr are read as it runs (a child blocked on a full pipe
/// would never exit), collected at the end with a time limit.
pub struct Drained {
    child: std::process::Child,
    out: std::thread::JoinHandle<Vec<u8>>,
    err: std::thread::JoinHandle<Vec<u8>>,
}

impl Drained {
    pub fn new(mut child: std::process::Child) -> Drained {
        fn drain(
            r: Option<impl std::io::Read + Send + 'static>,
        ) -> std::thread::JoinHandle<Vec<u8>> {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut v);
                }
                v
            })
        }
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        Drained { child, out, err }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the exit (killing the child and failing the test after `limit`).
    pub fn finish(mut self, limit: std::time::Duration) -> std::process::Output {
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                panic!("the child did not end within {limit:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        std::process::Output {
            status,
            stdout: self.out.join().unwrap(),
            stderr: self.err.join().unwrap(),
        }
    }
}

include!("tools.rs");
