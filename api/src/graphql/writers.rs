//! The threads that write a transcript segment's frame to thousands of sockets at once (see
//! `transcripts`): one per CPU this process may use, each pinned to its CPU on Linux.
//!
//! Every thread takes its share of a segment's sockets, a chunk at a time, from one list. Each
//! write is a system call that, on a local network, also runs the receiving side's TCP, so the
//! shares must run side by side.
//! Left to the scheduler they did not always: a share handed to a pool thread woke on the busy
//! core, and the two shares took turns there in 4 ms slices while the other core ran other work
//! (BENCHMARKS.md, session 13). Pinned, every share has a core of its own.

use std::sync::{OnceLock, mpsc};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The writer threads (started at the first large fan-out, idle in between).
pub(crate) struct Writers {
    threads: Vec<mpsc::Sender<Job>>,
}

impl Writers {
    /// The process's writers.
    pub(crate) fn get() -> &'static Self {
        static WRITERS: OnceLock<Writers> = OnceLock::new();
        WRITERS.get_or_init(Self::start)
    }

    fn start() -> Self {
        let threads = cpus()
            .into_iter()
            .filter_map(|cpu| {
                let (sender, jobs) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name(format!("crm-writer-{cpu}"))
                    .spawn(move || {
                        pin(cpu);
                        while let Ok(job) = jobs.recv() {
                            job();
                        }
                    })
                    .ok()
                    .map(|_| sender)
            })
            .collect();
        Self { threads }
    }

    /// How many shares a fan-out should have.
    pub(crate) fn len(&self) -> usize {
        self.threads.len()
    }

    /// Runs `work` on writer `index` (modulo their number); if that thread is gone (a job
    /// panicked), on tokio's blocking pool (so that it does not run before the other shares are
    /// handed out), or here and now outside a runtime.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        index: usize,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        match self.threads.get(index % self.threads.len().max(1)) {
            Some(thread) => {
                if let Err(mpsc::SendError(job)) = thread.send(job) {
                    fallback(job);
                }
            }
            None => fallback(job),
        }
        result
    }
}

/// Runs the job of a writer that is gone.
fn fallback(job: Job) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(job)),
        Err(_) => job(),
    }
}

/// The CPUs this process may run on, at most as many as it may use at once.
#[cfg(target_os = "linux")]
fn cpus() -> Vec<usize> {
    use nix::{sched::CpuSet, unistd::Pid};
    let usable = std::thread::available_parallelism().map_or(1, usize::from);
    match nix::sched::sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .take(usable)
            .collect(),
        Err(_) => (0..usable).collect(),
    }
}

#[cfg(not(target_os = "linux"))]
fn cpus() -> Vec<usize> {
    (0..std::thread::available_parallelism().map_or(1, usize::from)).collect()
}

/// Keeps the calling thread on `cpu` (if the system refuses, it runs wherever it is put).
#[cfg(target_os = "linux")]
fn pin(cpu: usize) {
    use nix::{sched::CpuSet, unistd::Pid};
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok()
        && let Err(error) = nix::sched::sched_setaffinity(Pid::from_raw(0), &set)
    {
        tracing::debug!(cpu, %error, "A transcript writer could not be pinned to its CPU.");
    }
}

#[cfg(not(target_os = "linux"))]
fn pin(_cpu: usize) {}
