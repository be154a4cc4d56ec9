//! A second thread for a lone forward pass: it spins beside the pass and takes a share of each
//! multiply.
//!
//! A query of a few dozen word pieces makes two dozen multiplies of a few hundred microseconds
//! each. Handing half of each to a rayon thread costs a wake-up every time (the thread sleeps
//! between multiplies), and on the virtual machines measured a wake-up cost as much as the half it
//! saved: two threads were no faster than one. The helper is woken once per pass instead, then
//! waits for work by spinning on an atomic counter (no system call while the gaps between
//! multiplies are short; after ~0.1 ms it yields its core on every turn) until the pass ends.
//!
//! One helper serves one pass at a time; a pass that finds it taken runs alone. Work is posted as
//! a borrowed closure: [`Lease::share`] does not return (nor unwind) before the helper is done
//! with it, which is what makes lending a borrow to another thread sound.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;

/// The work posted to the helper: a closure borrowed for the duration of one [`Lease::share`].
type Work = *const (dyn Fn() + Sync);

/// State shared between the pass and the helper thread.
struct Shared {
    /// A pass holds the helper.
    leased: AtomicBool,
    /// Work items posted so far, and finished so far; the helper runs item `posted` when
    /// `finished < posted`.
    posted: AtomicUsize,
    finished: AtomicUsize,
    /// The helper's work fell over (a panic): the pass re-raises it.
    failed: AtomicBool,
    /// The work of the item posted last; written only while `finished == posted`.
    work: UnsafeCell<Option<Work>>,
}

// SAFETY: `work` is written by the leaseholder only while the helper is idle (`finished ==
// posted`), and read by the helper only between seeing `posted` move (Acquire) and storing
// `finished` (Release); the closure it points to is `Sync`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

struct Helper {
    shared: Arc<Shared>,
    thread: Thread,
}

static HELPER: OnceLock<Option<Helper>> = OnceLock::new();

/// The use of the helper thread for one forward pass.
pub struct Lease {
    shared: &'static Shared,
}

/// The helper for a pass, when the process may run two threads and no other pass holds it.
pub fn lease() -> Option<Lease> {
    if rayon::current_num_threads() < 2 {
        return None;
    }
    let helper: &'static Helper = HELPER.get_or_init(start).as_ref()?;
    let shared: &'static Shared = &helper.shared;
    shared
        .leased
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .ok()?;
    helper.thread.unpark();
    Some(Lease { shared })
}

fn start() -> Option<Helper> {
    let shared = Arc::new(Shared {
        leased: AtomicBool::new(false),
        posted: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        work: UnsafeCell::new(None),
    });
    let mine = Arc::clone(&shared);
    let handle = std::thread::Builder::new()
        .name("likewise-helper".into())
        .spawn(move || serve(&mine))
        .ok()?;
    Some(Helper {
        shared,
        thread: handle.thread().clone(),
    })
}

/// The helper's loop: parked while no pass holds it; spinning on `posted` while one does.
fn serve(shared: &Shared) {
    loop {
        while !shared.leased.load(Ordering::Acquire) {
            std::thread::park();
        }
        let mut idle = 0u32;
        while shared.leased.load(Ordering::Acquire) {
            let done = shared.finished.load(Ordering::Relaxed);
            if shared.posted.load(Ordering::Acquire) == done {
                pause(&mut idle);
                continue;
            }
            idle = 0;
            // SAFETY: posted > finished: the leaseholder wrote `work` before moving `posted`
            // (Release, seen above with Acquire) and waits for `finished` before the closure's
            // borrow ends.
            let work = unsafe { (*shared.work.get()).expect("work posted with the count") };
            let ran =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*work)() }));
            if ran.is_err() {
                shared.failed.store(true, Ordering::Relaxed);
            }
            shared.finished.store(done + 1, Ordering::Release);
        }
    }
}

impl Lease {
    /// Runs `theirs` on the helper and `mine` here, and returns when both are done.
    pub fn share(&self, theirs: &(dyn Fn() + Sync), mine: impl FnOnce()) {
        let shared = self.shared;
        let posted = shared.posted.load(Ordering::Relaxed);
        // SAFETY: the helper is idle (every item posted is finished: `share` waits for it), so
        // nothing reads `work` now. The borrow's lifetime is erased; `Wait` below keeps this
        // frame alive until the helper has finished with it, even if `mine` panics.
        unsafe {
            let erased: Work = std::mem::transmute::<&(dyn Fn() + Sync), Work>(theirs);
            *shared.work.get() = Some(erased);
        }
        shared.posted.store(posted + 1, Ordering::Release);
        let wait = Wait {
            shared,
            until: posted + 1,
        };
        mine();
        drop(wait);
        if shared.failed.swap(false, Ordering::Relaxed) {
            panic!("the helper thread's share of a multiply panicked");
        }
    }
}

/// Waits, when dropped, until the helper has finished item `until`.
struct Wait {
    shared: &'static Shared,
    until: usize,
}

impl Drop for Wait {
    fn drop(&mut self) {
        let mut idle = 0u32;
        while self.shared.finished.load(Ordering::Acquire) < self.until {
            pause(&mut idle);
        }
    }
}

/// Spins of a waiting thread before it starts offering its core to others on every turn: about
/// a tenth of a millisecond, longer than the gap between two multiplies of one pass.
const SPINS_BEFORE_YIELDING: u32 = 2000;

/// One turn of waiting: a spin, or, once the wait has run long (more threads than cores, the
/// other side not running), a yield, so a waiting thread does not hold a core the other needs.
fn pause(idle: &mut u32) {
    if *idle < SPINS_BEFORE_YIELDING {
        *idle += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.leased.store(false, Ordering::Release);
    }
}
