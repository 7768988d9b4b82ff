//! Events: a line only when the top class changes and stays changed — what an alarm or a PLC
//! wants instead of one line per frame.
//!
//! The state is the current stable class (none at the start). A frame *votes* for its best
//! class when that class's probability is at least `min_score` (an "unknown" frame votes for
//! `unknown`, see `--min-prob`); a frame below `min_score` votes for nothing and breaks any run.
//! When `min_frames` consecutive frames vote for the same class and it is not the stable one,
//! it becomes the stable class and an event is emitted. So a class flickering for fewer than
//! `min_frames` frames, or seen with low confidence, never raises an event.

/// Hysteresis settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventOptions {
    /// Consecutive frames a new class must hold (≥ 1).
    pub min_frames: u32,
    /// Lowest probability of a frame that counts (0 to 1).
    pub min_score: f32,
}

impl Default for EventOptions {
    fn default() -> Self {
        EventOptions {
            min_frames: 3,
            min_score: 0.5,
        }
    }
}

/// A change of the stable class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    /// The stable class before (`None` at the start of the stream).
    pub from: Option<Vote>,
    pub to: Vote,
    /// The lowest probability among the frames of the run that established it.
    pub min_score: f32,
}

/// What a frame votes for: a class index, or "unknown" (below `--min-prob`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Class(usize),
    Unknown,
}

/// The hysteresis state machine (see the module documentation). No allocation.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    options: EventOptions,
    stable: Option<Vote>,
    run: Option<(Vote, u32, f32)>,
}

impl Hysteresis {
    pub fn new(options: EventOptions) -> Hysteresis {
        Hysteresis {
            options,
            stable: None,
            run: None,
        }
    }

    /// The current stable class.
    pub fn stable(&self) -> Option<Vote> {
        self.stable
    }

    /// One frame: its vote and the probability behind it; the change it completes, if any.
    pub fn push(&mut self, vote: Vote, score: f32) -> Option<Change> {
        if score < self.options.min_score || score.is_nan() {
            self.run = None;
            return None;
        }
        let (count, low) = match self.run {
            Some((v, n, low)) if v == vote => (n + 1, low.min(score)),
            _ => (1, score),
        };
        self.run = Some((vote, count, low));
        if count >= self.options.min_frames.max(1) && self.stable != Some(vote) {
            let change = Change {
                from: self.stable,
                to: vote,
                min_score: low,
            };
            self.stable = Some(vote);
            return Some(change);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(options: EventOptions, frames: &[(usize, f32)]) -> Vec<(usize, Change)> {
        let mut h = Hysteresis::new(options);
        frames
            .iter()
            .enumerate()
            .filter_map(|(i, &(c, p))| h.push(Vote::Class(c), p).map(|e| (i, e)))
            .collect()
    }

    #[test]
    fn a_change_must_hold_for_min_frames() {
        let o = EventOptions {
            min_frames: 3,
            min_score: 0.6,
        };
        // 0 0 0 → event at frame 2; a flicker of 1 for two frames → nothing; 1 1 1 → event.
        let frames = [
            (0, 0.9),
            (0, 0.8),
            (0, 0.7),
            (1, 0.9),
            (1, 0.9),
            (0, 0.9),
            (1, 0.9),
            (1, 0.95),
            (1, 0.65),
            (1, 0.99),
        ];
        let events = run(o, &frames);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].0, 2);
        assert_eq!(events[0].1.from, None);
        assert_eq!(events[0].1.to, Vote::Class(0));
        assert!((events[0].1.min_score - 0.7).abs() < 1e-6);
        assert_eq!(events[1].0, 8);
        assert_eq!(events[1].1.from, Some(Vote::Class(0)));
        assert_eq!(events[1].1.to, Vote::Class(1));
        assert!((events[1].1.min_score - 0.65).abs() < 1e-6);
    }

    #[test]
    fn low_scores_break_runs_and_never_count() {
        let o = EventOptions {
            min_frames: 2,
            min_score: 0.6,
        };
        // A low frame between two high ones of class 1: no run of 2.
        let events = run(o, &[(1, 0.9), (1, 0.5), (1, 0.9), (0, 0.59), (0, 0.4)]);
        assert!(events.is_empty(), "{events:?}");
        let events = run(o, &[(1, 0.9), (1, 0.5), (1, 0.9), (1, 0.6)]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, 3);
    }

    #[test]
    fn unknown_is_a_state_of_its_own_and_one_frame_suffices_at_min_frames_1() {
        let mut h = Hysteresis::new(EventOptions {
            min_frames: 1,
            min_score: 0.0,
        });
        assert_eq!(h.push(Vote::Class(2), 0.3).unwrap().to, Vote::Class(2));
        assert!(h.push(Vote::Class(2), 0.3).is_none());
        let e = h.push(Vote::Unknown, 0.2).unwrap();
        assert_eq!((e.from, e.to), (Some(Vote::Class(2)), Vote::Unknown));
        assert_eq!(h.stable(), Some(Vote::Unknown));
        assert!(h.push(Vote::Class(0), f32::NAN).is_none());
    }
}
