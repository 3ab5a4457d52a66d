//! The prefetch buffer of one stream: ids fetched ahead of need, each taken exactly once.
//!
//! Pure bookkeeping, with time passed in, so that its rules are unit-tested without a network:
//!
//! * **Exactly once.** Ids sit in batches (one per node answer) and leave through a cursor that
//!   only moves forward; a batch that expired or was emptied is popped and never seen again.
//! * **Sizing.** The caller's own rate of use is forecast with [`RateForecast`] (Holt), and a
//!   refill covers the forecast rate over the prefetch horizon, clamped to the configured
//!   bounds and to what one node request may ask for ([`IDS_COUNT_MAX`]). A refill starts as
//!   soon as less than one such refill is left, so at a steady rate the buffer never runs dry
//!   while a request is in flight.
//! * **Validity.** With a validity set, a batch is dropped once it is older than that,
//!   measured from when its request was *sent* (Hazelcast's prefetch validity): ids with a
//!   timestamp are not handed out long after they were made.

use std::collections::VecDeque;
use std::time::Duration;

use shardflake::forecast::RateForecast;
use shardflake::BlockSizing;
use shardflake_proto::node::IDS_COUNT_MAX;
use tokio::time::Instant;

/// Use is folded into the forecast at most this often (the forecast pools reports shorter than
/// a second itself; this only keeps the arithmetic off the hot path).
pub(crate) const USE_REPORT_MS: u64 = 100;

/// The prefetch settings of a client, validated by the builder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Prefetch {
    /// Smallest refill, and the refill size before anything is known about the rate.
    pub min: usize,
    /// Largest refill (at most [`IDS_COUNT_MAX`]).
    pub max: usize,
    /// A refill covers this much of the forecast use.
    pub horizon: Duration,
    /// Ids older than this are dropped unused.
    pub validity: Option<Duration>,
}

impl Prefetch {
    fn sizing(&self) -> BlockSizing {
        BlockSizing {
            min: self.min as u64,
            max: self.max.min(IDS_COUNT_MAX as usize) as u64,
            target_ms: 0,
            change_factor_max: 1,
        }
    }
}

/// One node answer.
#[derive(Debug)]
struct Batch {
    /// Increasing from 1 in arrival order; the fast path compares it with the highest expired.
    seq: u64,
    ids: Vec<u64>,
    /// The next id to hand out.
    pos: usize,
    expires: Option<Instant>,
}

impl Batch {
    fn left(&self) -> usize {
        self.ids.len() - self.pos
    }
}

/// The buffer of one stream.
#[derive(Debug)]
pub(crate) struct Buffer {
    cfg: Prefetch,
    batches: VecDeque<Batch>,
    buffered: usize,
    last_seq: u64,
    /// The highest batch sequence number that expired (batches expire in arrival order).
    expired_through: u64,
    /// Ids dropped by expiry, over the buffer's life.
    expired_ids: u64,
    forecast: RateForecast,
    /// Ids taken since `report_at`, not yet in the forecast.
    used: u64,
    report_at: Instant,
    /// Ids that waiting callers need in the buffer (the sum of their requests).
    pub demand: usize,
}

impl Buffer {
    pub fn new(cfg: Prefetch, now: Instant) -> Self {
        Self {
            cfg,
            batches: VecDeque::new(),
            buffered: 0,
            last_seq: 0,
            expired_through: 0,
            expired_ids: 0,
            forecast: RateForecast::default(),
            used: 0,
            report_at: now,
            demand: 0,
        }
    }

    /// Ids ready to hand out (some may have expired since the last [`Buffer::expire`]).
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// The forecast rate of use, ids per second.
    pub fn forecast_per_s(&self) -> f64 {
        self.forecast.per_s()
    }

    /// Ids dropped by expiry so far.
    pub fn expired_ids(&self) -> u64 {
        self.expired_ids
    }

    /// The highest expired batch sequence number.
    pub fn expired_through(&self) -> u64 {
        self.expired_through
    }

    /// When the oldest batch expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.batches.front().and_then(|b| b.expires)
    }

    fn record_use(&mut self, n: usize, now: Instant) {
        self.used += n as u64;
        self.report(now);
    }

    /// Folds the use since the last report into the forecast, if it covers long enough. Also
    /// called when nothing was used, so an idle stream's forecast falls.
    fn report(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.report_at).as_millis() as u64;
        if ms >= USE_REPORT_MS {
            self.forecast.observe(self.used, ms);
            self.used = 0;
            self.report_at = now;
        }
    }

    /// Drops the batches that expired by `now`; returns the highest expired sequence number.
    pub fn expire(&mut self, now: Instant) -> u64 {
        while let Some(b) = self.batches.front() {
            if b.expires.is_some_and(|e| e <= now) {
                let left = b.left();
                self.buffered -= left;
                self.expired_ids += left as u64;
                self.expired_through = b.seq;
                self.batches.pop_front();
            } else {
                break;
            }
        }
        self.expired_through
    }

    /// Takes `n` ids, oldest first, or none when fewer than `n` are buffered.
    pub fn take(&mut self, n: usize, now: Instant) -> Option<Vec<u64>> {
        self.expire(now);
        if n == 0 || self.buffered < n {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let b = self
                .batches
                .front_mut()
                .expect("buffered ids are in batches");
            let k = (n - out.len()).min(b.left());
            out.extend_from_slice(&b.ids[b.pos..b.pos + k]);
            b.pos += k;
            if b.left() == 0 {
                self.batches.pop_front();
            }
        }
        self.buffered -= n;
        self.record_use(n, now);
        Some(out)
    }

    /// Takes one id, if one is buffered ([`Buffer::take`] without the allocation).
    pub fn take_one(&mut self, now: Instant) -> Option<u64> {
        self.expire(now);
        let b = self.batches.front_mut()?;
        let id = b.ids[b.pos];
        b.pos += 1;
        if b.left() == 0 {
            self.batches.pop_front();
        }
        self.buffered -= 1;
        self.record_use(1, now);
        Some(id)
    }

    /// Moves up to `max` ids of the oldest batch into `out` (cleared first) and returns that
    /// batch's sequence number, or `None` when nothing is buffered.
    pub fn take_chunk(&mut self, max: usize, now: Instant, out: &mut Vec<u64>) -> Option<u64> {
        self.expire(now);
        let b = self.batches.front_mut()?;
        let k = max.max(1).min(b.left());
        let seq = b.seq;
        out.clear();
        out.extend_from_slice(&b.ids[b.pos..b.pos + k]);
        b.pos += k;
        if b.left() == 0 {
            self.batches.pop_front();
        }
        self.buffered -= k;
        self.record_use(k, now);
        Some(seq)
    }

    /// Adds the ids of a node answer whose request was sent at `sent`.
    pub fn push(&mut self, ids: Vec<u64>, sent: Instant) {
        if ids.is_empty() {
            return;
        }
        self.last_seq += 1;
        self.buffered += ids.len();
        self.batches.push_back(Batch {
            seq: self.last_seq,
            ids,
            pos: 0,
            expires: self.cfg.validity.map(|v| sent + v),
        });
    }

    /// One refill covering the forecast use over the horizon, within the bounds.
    pub fn forecast_size(&self) -> usize {
        let horizon_ms = self.cfg.horizon.as_millis().min(u64::MAX as u128) as u64;
        self.forecast.block_size(&self.cfg.sizing(), horizon_ms) as usize
    }

    /// How many ids to ask a node for now, or `None` when the buffer holds enough: at least
    /// one forecast refill, and whatever waiting callers need.
    pub fn refill_size(&mut self, now: Instant) -> Option<usize> {
        self.expire(now);
        self.report(now);
        let low = self.forecast_size();
        let short = self.demand.saturating_sub(self.buffered);
        if short == 0 && self.buffered >= low {
            return None;
        }
        Some(low.max(short).min(IDS_COUNT_MAX as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min: usize, max: usize, validity: Option<u64>) -> Prefetch {
        Prefetch {
            min,
            max,
            horizon: Duration::from_secs(1),
            validity: validity.map(Duration::from_millis),
        }
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn refills_follow_the_forecast_rate_within_the_bounds() {
        let t0 = Instant::now();
        let mut b = Buffer::new(cfg(100, 50_000, None), t0);
        // Nothing known yet: the minimum.
        assert_eq!(b.refill_size(t0), Some(100));
        b.push((1..=100_000).collect(), t0);
        assert_eq!(b.refill_size(t0), None, "a full buffer needs no refill");
        // 2,000 ids a second for five seconds, taken 200 at a time every 100 ms.
        for step in 1..=50 {
            b.take(200, ms(t0, step * 100)).unwrap();
        }
        let rate = b.forecast_per_s();
        assert!((rate - 2_000.0).abs() < 1.0, "{rate}");
        // One horizon (1 s) of 2,000/s with the forecast's headroom of 1.25.
        assert_eq!(b.forecast_size(), 2_500);
        // Still 90,000 buffered: no refill until fewer than one refill is left.
        assert_eq!(b.refill_size(ms(t0, 5_000)), None);
        b.take(b.buffered() - 2_000, ms(t0, 5_050)).unwrap();
        assert_eq!(b.refill_size(ms(t0, 5_050)), Some(2_500));
        // A rate beyond the maximum is clamped to it.
        for step in 1..=20 {
            b.push((0..100_000).collect(), t0);
            b.take(100_000, ms(t0, 5_050 + step * 100)).unwrap();
        }
        assert_eq!(b.forecast_size(), 50_000);
    }

    #[test]
    fn waiting_callers_raise_the_refill_up_to_one_request() {
        let t0 = Instant::now();
        let mut b = Buffer::new(cfg(100, 1_000, None), t0);
        b.demand = 5_000;
        assert_eq!(b.refill_size(t0), Some(5_000));
        b.demand = 10_000_000;
        assert_eq!(b.refill_size(t0), Some(IDS_COUNT_MAX as usize));
        b.push((0..10).collect(), t0);
        b.demand = 10;
        assert_eq!(
            b.refill_size(t0),
            Some(100),
            "demand met, the minimum refill"
        );
    }

    #[test]
    fn expired_batches_are_dropped_whole_and_in_order() {
        let t0 = Instant::now();
        let mut b = Buffer::new(cfg(10, 100, Some(1_000)), t0);
        b.push(vec![1, 2, 3], t0);
        b.push(vec![4, 5, 6], ms(t0, 500));
        assert_eq!(b.next_expiry(), Some(ms(t0, 1_000)));
        assert_eq!(b.take(1, ms(t0, 999)), Some(vec![1]));
        // At 1 s the first batch's two remaining ids go; the second batch stays.
        assert_eq!(b.take(1, ms(t0, 1_000)), Some(vec![4]));
        assert_eq!(b.expired_ids(), 2);
        assert_eq!(b.expired_through(), 1);
        assert_eq!(b.take(3, ms(t0, 1_200)), None, "only two left");
        assert_eq!(b.expire(ms(t0, 1_500)), 2);
        assert_eq!(b.buffered(), 0);
        assert_eq!(b.take(1, ms(t0, 1_500)), None);
        assert_eq!(b.next_expiry(), None);
    }

    #[test]
    fn no_id_leaves_twice_whichever_way_it_is_taken() {
        let t0 = Instant::now();
        let mut b = Buffer::new(cfg(10, 100, Some(10_000)), t0);
        let mut all = Vec::new();
        let mut chunk = Vec::new();
        let mut next = 0u64;
        for round in 0..200u64 {
            let now = ms(t0, round * 7);
            let n = 1 + (round % 13) as usize;
            b.push((next..next + n as u64).collect(), now);
            next += n as u64;
            if round % 5 == 0 {
                all.extend(b.take_one(now));
            } else if round % 3 == 0 {
                if let Some(seq) = b.take_chunk(5, now, &mut chunk) {
                    assert!(seq > b.expired_through());
                    all.extend_from_slice(&chunk);
                }
            } else if let Some(ids) = b.take(1 + (round % 4) as usize, now) {
                all.extend(ids);
            }
        }
        let drained = b.buffered();
        all.extend(b.take(drained, ms(t0, 1_400)).unwrap_or_default());
        shardflake::check::check_ids(&all).assert_unique();
        // Expiry aside, everything pushed came out.
        assert_eq!(all.len() as u64 + b.expired_ids(), next);
    }

    #[test]
    fn an_idle_stream_forecast_falls_back_to_the_minimum() {
        let t0 = Instant::now();
        let mut b = Buffer::new(cfg(100, 100_000, None), t0);
        b.push((0..100_000).collect(), t0);
        for step in 1..=30 {
            b.take(1_000, ms(t0, step * 100)).unwrap();
        }
        assert!(b.forecast_size() > 10_000);
        // Ten quiet seconds, observed through the refill checks the task makes.
        for s in 1..=10 {
            let _ = b.refill_size(ms(t0, 3_000 + s * 1_000));
        }
        assert_eq!(b.forecast_size(), 100);
    }
}
