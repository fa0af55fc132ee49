//! Who may run LightGBM, and on how many threads.
//!
//! LightGBM keeps its thread count in one process-wide variable: every C
//! API call that takes parameters stores its `num_threads` there, and
//! code inside the library reads it twice: once to size per-thread
//! buffers (a predictor's row buffers, a tree learner's histograms), once
//! to size the OpenMP team that indexes them by thread number. A call
//! that raises the count between another call's two reads makes that call
//! write past its buffers: a two-thread training next to a one-thread
//! prediction crashed the process (SIGSEGV). LightGBM's documentation
//! says as much: do not change `num_threads` while jobs run at once.
//!
//! So every LightGBM call holds a `Lease`, and all leases held at one
//! time share one count, which the first of them stores in LightGBM's
//! variable. Work whose result depends on the count (training: the order
//! of floating-point sums follows the threads) asks for `exactly` its
//! count and waits while another count is in use. Work whose result does
//! not (predicting, loading, saving) takes `any` count: the one in use,
//! or its own when LightGBM is idle, so a prediction never waits for a
//! training.

use std::ffi::c_int;

use parking_lot::{Condvar, Mutex};

extern "C" {
    /// LightGBM's setter of its thread count (`utils/openmp_wrapper.h`,
    /// C linkage): the one every parameterised C API call makes.
    fn OMP_SET_NUM_THREADS(num_threads: c_int);
}

struct State {
    /// The count the current leases share (meaningless while `active` is 0).
    threads: usize,
    active: usize,
    /// The count a waiting training asks for, 0 if none: the next idle
    /// moment switches to it, so a steady stream of predictions cannot
    /// keep the count that shuts it out.
    wanted: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    threads: 0,
    active: 0,
    wanted: 0,
});
static IDLE: Condvar = Condvar::new();

/// Permission to call LightGBM with `threads()` threads; released on drop.
#[must_use = "LightGBM may be called only while the lease is held"]
pub struct Lease {
    threads: usize,
}

impl Lease {
    /// For work whose result depends on the count. Blocks (call it on a
    /// blocking thread) while leases with another count are held.
    pub fn exactly(threads: usize) -> Lease {
        let threads = threads.max(1);
        let mut state = STATE.lock();
        while state.active > 0 && state.threads != threads {
            if state.wanted == 0 {
                state.wanted = threads;
            }
            IDLE.wait(&mut state);
        }
        if state.wanted == threads {
            state.wanted = 0;
        }
        enter(&mut state, threads)
    }

    /// For work whose result does not depend on the count: never waits
    /// for another lease.
    pub fn any(preferred: usize) -> Lease {
        let mut state = STATE.lock();
        let threads = match (state.active, state.wanted) {
            (0, 0) => preferred.max(1),
            (0, wanted) => wanted,
            _ => state.threads,
        };
        enter(&mut state, threads)
    }

    /// `num_threads=N`, the count to pass in a call's parameter string.
    pub fn parameter(&self) -> String {
        format!("num_threads={}", self.threads)
    }
}

fn enter(state: &mut State, threads: usize) -> Lease {
    if state.active == 0 {
        state.threads = threads;
        // SAFETY: a plain store into LightGBM's variable; no LightGBM call
        // is running (no lease is held), and none starts before this one
        // is counted, under the same lock.
        unsafe { OMP_SET_NUM_THREADS(c_int::try_from(threads).unwrap_or(c_int::MAX)) };
    }
    state.active += 1;
    Lease { threads }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = STATE.lock();
        state.active -= 1;
        if state.active == 0 {
            IDLE.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leases share a count: a prediction joins a training's, a training
    /// with another count waits until the count is free, and a waiting
    /// training's count is the next one taken.
    #[test]
    fn leases_share_one_count() {
        // Other tests in this binary may hold leases; this one only
        // asserts what holds whatever else runs.
        let training = Lease::exactly(3);
        let prediction = Lease::any(1);
        assert_eq!(prediction.parameter(), "num_threads=3");
        let (tx, rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn(move || {
            let lease = Lease::exactly(5);
            tx.send(lease.parameter()).ok();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(100))
                .is_err(),
            "a training with another count ran beside one holding 3"
        );
        drop((training, prediction));
        assert_eq!(rx.recv().ok().as_deref(), Some("num_threads=5"));
        other.join().ok();
    }
}
