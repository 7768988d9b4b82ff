//! How long-running library work (encoding a split, building a cache, the α/β search,
//! fine-tuning) reports where it is: the CLI draws progress bars, a daemon logs, a test stays
//! quiet ([`Silent`]).

/// Receives the progress of one piece of work, stage by stage.
pub trait Progress {
    /// A stage of `total` steps starts (`"cache"`, `"val"`, `"search"`, ...).
    fn start(&mut self, stage: &str, total: usize);
    /// `done` steps of the current stage are finished.
    fn set(&mut self, done: usize);
    /// The current stage is over.
    fn finish(&mut self);
    /// A line for the person watching (a skipped file, a repaired store), shown without
    /// disturbing the bars.
    fn note(&mut self, line: &str);
}

/// Progress nobody watches.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn start(&mut self, _: &str, _: usize) {}
    fn set(&mut self, _: usize) {}
    fn finish(&mut self) {}
    fn note(&mut self, _: &str) {}
}
