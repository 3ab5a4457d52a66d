//! The measuring loop, the rows of the table and the median of runs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;

/// Ids issued between two looks at the time, so that reading `Instant` costs little per id.
const CHECK_EVERY_IDS: u64 = 1024;

/// Ids per call on the batch and range rows.
pub(crate) const BATCH_IDS: usize = 4096;

/// What one thread did in one measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) ids: u64,
    /// Timestamp of the last id minus the wall clock at the end, in ms.
    pub(crate) ahead_ms: i64,
    /// Calls that returned an error (counted, then the thread carries on).
    pub(crate) errors: u64,
    /// From the start until the last thread stopped.
    pub(crate) elapsed: Duration,
}

impl Outcome {
    pub(crate) fn per_s(&self) -> f64 {
        self.ids as f64 / self.elapsed.as_secs_f64()
    }
}

/// The closure that measures a row on a number of threads for a duration.
type Measure = Box<dyn Fn(usize, Duration) -> Result<Outcome>>;

/// One row of the table: a name and how to measure it on a number of threads.
///
/// Every constructor takes `make`, which builds the generator, `step`, which issues some ids
/// and returns how many and the last one (an error is counted in the `errors` column, and
/// the thread carries on), and `ts_ms`, which gives an id's timestamp in Unix ms for the
/// "ahead" columns.
pub struct Row {
    name: String,
    measure: Measure,
}

impl Row {
    /// A row whose generator is shared by every thread (an `Arc` of one generator, made
    /// again for each measurement).
    pub fn shared<G, I>(
        name: impl Into<String>,
        make: impl Fn() -> G + 'static,
        step: impl Fn(&G) -> Result<(u64, I)> + Sync + 'static,
        ts_ms: impl Fn(I) -> u64 + Sync + 'static,
    ) -> Row
    where
        G: Send + Sync + 'static,
        I: Copy + 'static,
    {
        Row {
            name: name.into(),
            measure: Box::new(move |threads, duration| {
                let g = Arc::new(make());
                let make_ref = move || Arc::clone(&g);
                measure(
                    threads,
                    duration,
                    &make_ref,
                    &|g: &mut Arc<G>| step(g),
                    &ts_ms,
                )
            }),
        }
    }

    /// A row whose generator is shared by every thread, each filling a buffer of
    /// [`BATCH_IDS`] ids of its own.
    pub(crate) fn shared_buffer<G>(
        name: impl Into<String>,
        make: impl Fn() -> G + 'static,
        fill: impl Fn(&G, &mut [u64]) -> Result<()> + Sync + 'static,
        ts_ms: impl Fn(u64) -> u64 + Sync + 'static,
    ) -> Row
    where
        G: Send + Sync + 'static,
    {
        Row {
            name: name.into(),
            measure: Box::new(move |threads, duration| {
                let g = Arc::new(make());
                let make_ref = move || (Arc::clone(&g), vec![0u64; BATCH_IDS]);
                measure(
                    threads,
                    duration,
                    &make_ref,
                    &|(g, buf): &mut (Arc<G>, Vec<u64>)| {
                        fill(g, buf)?;
                        // Every id written must stay written.
                        black_box(&mut buf[..]);
                        Ok((buf.len() as u64, buf[buf.len() - 1]))
                    },
                    &ts_ms,
                )
            }),
        }
    }

    /// A row with one generator per thread, made on the thread that uses it.
    pub fn per_thread<G, I>(
        name: impl Into<String>,
        make: impl Fn() -> G + Sync + 'static,
        step: impl Fn(&mut G) -> Result<(u64, I)> + Sync + 'static,
        ts_ms: impl Fn(I) -> u64 + Sync + 'static,
    ) -> Row
    where
        G: 'static,
        I: Copy + 'static,
    {
        Row {
            name: name.into(),
            measure: Box::new(move |threads, duration| {
                measure(threads, duration, &make, &step, &ts_ms)
            }),
        }
    }

    /// The row's name, which `--only` matches.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Measures the row once on `threads` threads for `duration`.
    pub(crate) fn measure(&self, threads: usize, duration: Duration) -> Result<Outcome> {
        (self.measure)(threads, duration)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs `step` on `threads` threads until `duration` is over. Each thread gets the state
/// `make()` returns (an `Arc` of a shared generator, or a generator of its own); `step`
/// issues some ids and returns how many and the last one; `ts_ms` gives an id's Unix ms.
///
/// Generic rather than `dyn`: each row's loop is compiled for its own generator, so the
/// harness adds no indirect call per id and fast generators are not flattened towards the
/// cost of the harness.
fn measure<S, I, M, F, T>(
    threads: usize,
    duration: Duration,
    make: &M,
    step: &F,
    ts_ms: &T,
) -> Result<Outcome>
where
    I: Copy,
    M: Fn() -> S + Sync + ?Sized,
    F: Fn(&mut S) -> Result<(u64, I)> + Sync + ?Sized,
    T: Fn(I) -> u64 + Sync + ?Sized,
{
    let started = Instant::now();
    let deadline = started + duration;
    let results: Vec<Result<Outcome>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || -> Result<Outcome> {
                    // Made on the thread that uses it: some peers' state is not `Send`.
                    let mut state = make();
                    let mut ids = 0;
                    let mut errors = 0;
                    let mut last = None;
                    let mut next_check = CHECK_EVERY_IDS;
                    loop {
                        match step(&mut state) {
                            Ok((n, id)) => {
                                ids += n;
                                last = Some(black_box(id));
                            }
                            Err(_) => errors += 1,
                        }
                        // Counted in ids, not calls, so that batch rows stop on time too.
                        if ids + errors >= next_check {
                            if Instant::now() >= deadline {
                                break;
                            }
                            next_check = ids + errors + CHECK_EVERY_IDS;
                        }
                    }
                    let now = now_ms() as i64;
                    let ahead_ms = last.map_or(0, |id| ts_ms(id) as i64 - now);
                    Ok(Outcome {
                        ids,
                        ahead_ms,
                        errors,
                        elapsed: Duration::ZERO,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a bench thread panicked"))
            .collect()
    });
    // Rates use the time until the last thread stopped, which is a little over `duration`.
    let mut total = Outcome {
        ids: 0,
        ahead_ms: i64::MIN,
        errors: 0,
        elapsed: started.elapsed(),
    };
    for r in results {
        let r = r?;
        total.ids += r.ids;
        total.errors += r.errors;
        total.ahead_ms = total.ahead_ms.max(r.ahead_ms);
    }
    Ok(total)
}

/// The run with the median rate, with the largest "ahead" and all the errors of every run.
pub(crate) fn median(mut v: Vec<Outcome>) -> Outcome {
    v.sort_by(|a, b| a.per_s().total_cmp(&b.per_s()));
    let mid = v[v.len() / 2];
    Outcome {
        ids: mid.ids,
        elapsed: mid.elapsed,
        ahead_ms: v.iter().map(|o| o.ahead_ms).max().unwrap_or(0),
        errors: v.iter().map(|o| o.errors).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ids: u64, ahead_ms: i64, errors: u64) -> Outcome {
        Outcome {
            ids,
            ahead_ms,
            errors,
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_median_takes_the_middle_rate_the_largest_ahead_and_every_error() {
        let m = median(vec![
            outcome(300, -5, 1),
            outcome(100, 7, 0),
            outcome(200, 2, 2),
        ]);
        assert_eq!(m.ids, 200);
        assert_eq!(m.ahead_ms, 7);
        assert_eq!(m.errors, 3);
    }

    #[test]
    fn a_failing_step_is_counted_and_the_thread_carries_on() {
        let row = Row::per_thread(
            "every other call fails",
            || 0u64,
            |n| {
                *n += 1;
                if *n % 2 == 0 {
                    anyhow::bail!("refused");
                }
                Ok((1, now_ms()))
            },
            |ms| ms,
        );
        let o = row.measure(2, Duration::from_millis(5)).unwrap();
        assert!(o.ids > 0 && o.errors > 0, "{o:?}");
        assert!(o.ids.abs_diff(o.errors) <= 2, "{o:?}");
    }
}
