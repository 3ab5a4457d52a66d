//! Demand forecasting for blocks: Holt's linear exponential smoothing, the one forecaster of
//! shardflake.
//!
//! The coordinator forecasts each host's per-shard counter use (temporal mode) and each
//! node's per-namespace consumption rate (segment mode) with it, and sizes the blocks it
//! grants from the forecast. Holt's method (double exponential smoothing) tracks a level and
//! a trend, so a host whose load grows gets blocks that grow with it instead of lagging one
//! interval behind.
//!
//! `level_t = α·x_t + (1−α)·(level_{t−1} + trend_{t−1})`,
//! `trend_t = β·(level_t − level_{t−1}) + (1−β)·trend_{t−1}`,
//! `forecast_{t+h} = level_t + h·trend_t` (Hyndman & Athanasopoulos, *Forecasting: Principles
//! and Practice*, 3rd ed., section 8.2).

/// Default smoothing factor of the level.
pub const HOLT_ALPHA_DEFAULT: f64 = 0.5;
/// Default smoothing factor of the trend.
pub const HOLT_BETA_DEFAULT: f64 = 0.3;

/// Holt's linear method over one series.
///
/// ```
/// use shardflake::forecast::Holt;
/// let mut h = Holt::default();
/// for x in [100.0, 200.0, 300.0, 400.0] {
///     h.observe(x);
/// }
/// // A steady rise of 100 per shard is followed, not averaged away.
/// assert!((h.forecast(1) - 500.0).abs() < 1.0, "{}", h.forecast(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Holt {
    alpha: f64,
    beta: f64,
    level: f64,
    trend: f64,
    observations: u64,
}

impl Default for Holt {
    fn default() -> Self {
        Self::new(HOLT_ALPHA_DEFAULT, HOLT_BETA_DEFAULT)
    }
}

impl Holt {
    /// A forecaster with smoothing factors `alpha` (level) and `beta` (trend), both in `0..=1`.
    pub fn new(alpha: f64, beta: f64) -> Self {
        assert!(
            (0.0..=1.0).contains(&alpha) && (0.0..=1.0).contains(&beta),
            "smoothing factors must lie in 0..=1, got alpha {alpha}, beta {beta}"
        );
        Self {
            alpha,
            beta,
            level: 0.0,
            trend: 0.0,
            observations: 0,
        }
    }

    /// Adds the next value of the series, one step after the previous one.
    pub fn observe(&mut self, x: f64) {
        self.observe_after(x, 1.0);
    }

    /// Adds a value observed `dt` steps after the previous one (any positive real: series
    /// sampled at uneven intervals, Wright's extension of Holt's method). The trend stays
    /// per step: the level is projected `dt` steps before it is smoothed, and the change
    /// of level is divided by `dt`. With `dt = 1` this is [`Holt::observe`].
    pub fn observe_after(&mut self, x: f64, dt: f64) {
        let dt = if dt.is_finite() && dt > 0.0 { dt } else { 1.0 };
        match self.observations {
            0 => self.level = x,
            1 => {
                self.trend = (x - self.level) / dt;
                self.level = x;
            }
            _ => {
                let prev = self.level;
                self.level = self.alpha * x + (1.0 - self.alpha) * (self.level + dt * self.trend);
                self.trend = self.beta * (self.level - prev) / dt + (1.0 - self.beta) * self.trend;
            }
        }
        // The series are counts and rates, never negative: a level driven below zero by a
        // falling trend (traffic that stopped) would keep the forecast at zero for several
        // observations after the traffic is back. The level stops at zero, and so does the
        // fall.
        if self.level < 0.0 {
            self.level = 0.0;
            self.trend = self.trend.max(0.0);
        }
        self.observations += 1;
    }

    /// The forecast `steps` values ahead (never negative; 0 before any observation).
    pub fn forecast(&self, steps: u32) -> f64 {
        if self.observations == 0 {
            return 0.0;
        }
        (self.level + steps as f64 * self.trend).max(0.0)
    }

    /// Values observed so far.
    pub fn observations(&self) -> u64 {
        self.observations
    }
}

/// Reports shorter than this are pooled with the next ones before they become an observation:
/// a rate measured over a few milliseconds is mostly noise.
pub const RATE_INTERVAL_MS_MIN: u64 = 1_000;

/// Pooled reports spanning at least this long (ms) raise the forecast when their rate is
/// higher ([`RateForecast::per_s`]).
pub const RATE_PENDING_MS_MIN: u64 = 100;

/// A consumer's rate of use (values per second), forecast with [`Holt`] from reports of how
/// many values it used over how long: how the coordinator sizes a node's next block of a
/// namespace, and what the block-policy comparison runs.
///
/// Each observation is one step, whatever its length (reports come with renewals and block
/// requests, at least [`RATE_INTERVAL_MS_MIN`] apart once pooled), and the forecast is one
/// step ahead. Scaling the trend by the observations' spacing ([`Holt::observe_after`]) was
/// measured too: on the block-policy comparison's on/off trace it lagged the start of a
/// burst and stalled, where steps per observation never stall. A block is sized from the
/// forecast over the whole horizon; the next block (asked for when half of this one is
/// left) follows a rising rate. Before the first observation the pooled reports' rate is
/// the forecast, so a busy node that just started gets blocks of its size after its first
/// report, not minimum blocks for a second.
///
/// ```
/// use shardflake::forecast::RateForecast;
/// use shardflake::BlockSizing;
/// let mut f = RateForecast::default();
/// for _ in 0..5 {
///     f.observe(2_000, 1_000); // 2,000 values a second
/// }
/// assert!((f.per_s() - 2_000.0).abs() < 1.0);
/// let sizing = BlockSizing { min: 100, max: 1_000_000, target_ms: 0, change_factor_max: 1 };
/// // A 30 s horizon at 2,000/s, with the forecast headroom of 1.25.
/// assert_eq!(f.block_size(&sizing, 30_000), 75_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RateForecast {
    holt: Holt,
    /// Values and ms reported since the last observation (shorter than the minimum interval).
    pending_used: u64,
    pending_ms: u64,
    /// The rate of the last observation, and what was forecast for it.
    last_actual_per_s: f64,
    last_forecast_per_s: f64,
}

impl RateForecast {
    /// Takes a report: `used` values over `over_ms` milliseconds.
    pub fn observe(&mut self, used: u64, over_ms: u64) {
        self.pending_used = self.pending_used.saturating_add(used);
        self.pending_ms = self.pending_ms.saturating_add(over_ms);
        if self.pending_ms < RATE_INTERVAL_MS_MIN {
            return;
        }
        let rate = self.pending_used as f64 * 1_000.0 / self.pending_ms as f64;
        self.last_forecast_per_s = self.holt.forecast(1);
        self.last_actual_per_s = rate;
        self.holt.observe(rate);
        self.pending_used = 0;
        self.pending_ms = 0;
    }

    /// The forecast rate, values per second: one step ahead, or the rate of the reports
    /// pooled since the last observation if that is higher and they span at least
    /// [`RATE_PENDING_MS_MIN`] (a burst is followed within a fraction of a second, not at the
    /// next observation); before the first observation, the pooled rate (0 without any).
    pub fn per_s(&self) -> f64 {
        let pending = if self.pending_ms == 0 {
            0.0
        } else {
            self.pending_used as f64 * 1_000.0 / self.pending_ms as f64
        };
        if self.holt.observations() == 0 {
            return pending;
        }
        let forecast = self.holt.forecast(1);
        if self.pending_ms >= RATE_PENDING_MS_MIN {
            forecast.max(pending)
        } else {
            forecast
        }
    }

    /// The rate of the last observation and the forecast made for it before it was taken
    /// (forecast against actual, for the status API and metrics).
    pub fn last(&self) -> (f64, f64) {
        (self.last_forecast_per_s, self.last_actual_per_s)
    }

    /// Observations taken so far.
    pub fn observations(&self) -> u64 {
        self.holt.observations()
    }

    /// The block that covers `horizon_ms` of forecast demand, with the forecast headroom,
    /// within `sizing`'s bounds.
    pub fn block_size(&self, sizing: &crate::BlockSizing, horizon_ms: u64) -> u64 {
        let want = self.per_s() * horizon_ms as f64 / 1_000.0;
        sizing.for_forecast(want.ceil().min(u64::MAX as f64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_series_forecasts_the_constant() {
        let mut h = Holt::default();
        for _ in 0..20 {
            h.observe(1_000.0);
        }
        assert!((h.forecast(1) - 1_000.0).abs() < 1e-6);
        assert!((h.forecast(5) - 1_000.0).abs() < 1e-6);
    }

    #[test]
    fn linear_series_is_extrapolated() {
        let mut h = Holt::default();
        for i in 0..30 {
            h.observe(50.0 + 10.0 * i as f64);
        }
        // The next value is 50 + 10·30 = 350.
        assert!((h.forecast(1) - 350.0).abs() < 0.5, "{}", h.forecast(1));
        assert!((h.forecast(3) - 370.0).abs() < 0.5, "{}", h.forecast(3));
    }

    #[test]
    fn a_step_is_followed_within_a_few_observations() {
        let mut h = Holt::default();
        for _ in 0..10 {
            h.observe(100.0);
        }
        for _ in 0..8 {
            h.observe(1_000.0);
        }
        let f = h.forecast(1);
        assert!((900.0..1_200.0).contains(&f), "{f}");
    }

    #[test]
    fn uneven_spacing_keeps_the_trend_per_step() {
        // The same line, 10 + 2t, sampled at t = 0, 1, 3, 4, 8: the trend stays 2 per step.
        let mut h = Holt::default();
        let mut last = 0.0;
        for t in [0.0, 1.0, 3.0, 4.0, 8.0] {
            h.observe_after(10.0 + 2.0 * t, t - last);
            last = t;
        }
        assert!((h.forecast(1) - 28.0).abs() < 1e-9, "{}", h.forecast(1));
        let mut even = Holt::default();
        let mut uneven = Holt::default();
        for x in [1.0, 5.0, 2.0, 8.0] {
            even.observe(x);
            uneven.observe_after(x, 1.0);
        }
        assert_eq!(even, uneven, "dt = 1 is the plain method");
    }

    #[test]
    fn traffic_that_stops_and_comes_back_is_followed_at_once() {
        let mut h = Holt::default();
        for x in [1_000.0, 1_000.0, 1_000.0, 0.0, 0.0, 0.0, 0.0] {
            h.observe(x);
        }
        assert_eq!(h.forecast(1), 0.0);
        // Without the floor the level would sit far below zero here, and the first
        // observation of the traffic coming back would still forecast 0.
        h.observe(1_000.0);
        assert!(h.forecast(1) >= 500.0, "{}", h.forecast(1));
    }

    #[test]
    fn a_burst_raises_the_forecast_before_its_observation() {
        let mut f = RateForecast::default();
        f.observe(1_000, 1_000);
        f.observe(1_000, 1_000);
        assert!((f.per_s() - 1_000.0).abs() < 1e-9);
        // 50,000 values in 40 ms: too short to count.
        f.observe(50_000, 40);
        assert!((f.per_s() - 1_000.0).abs() < 1e-9);
        // 100,000 in 200 ms: 500,000/s, followed before the second is over.
        f.observe(50_000, 160);
        assert!((f.per_s() - 500_000.0).abs() < 1e-6, "{}", f.per_s());
        assert_eq!(f.observations(), 2);
    }

    #[test]
    fn falling_series_never_forecasts_below_zero() {
        let mut h = Holt::default();
        for x in [500.0, 300.0, 100.0, 0.0] {
            h.observe(x);
        }
        assert_eq!(h.forecast(4), 0.0);
        assert_eq!(Holt::default().forecast(1), 0.0);
    }

    #[test]
    #[should_panic(expected = "smoothing factors")]
    fn factors_outside_unit_interval_are_rejected() {
        let _ = Holt::new(1.5, 0.1);
    }

    #[test]
    fn rate_reports_pool_until_an_interval_is_long_enough() {
        let mut f = RateForecast::default();
        // 100 values over 200 ms, five times: one observation of 500/s after the fifth; until
        // then the pooled rate is the forecast.
        for i in 0..5 {
            assert_eq!(f.observations(), 0, "report {i}");
            f.observe(100, 200);
            if i < 4 {
                assert!((f.per_s() - 500.0).abs() < 1e-9, "pooled: {}", f.per_s());
            }
        }
        assert_eq!(f.observations(), 1);
        assert!((f.per_s() - 500.0).abs() < 1e-9);
        // Forecast against actual: 500 forecast, 1,500 seen.
        f.observe(3_000, 2_000);
        assert_eq!(f.last(), (500.0, 1_500.0));
        // The second observation sets the trend per observation: level 1,500, trend +1,000.
        assert!((f.per_s() - 2_500.0).abs() < 1e-9, "{}", f.per_s());
    }

    #[test]
    fn a_rate_block_is_clamped_to_its_bounds() {
        let sizing = crate::BlockSizing {
            min: 1_000,
            max: 50_000,
            target_ms: 0,
            change_factor_max: 1,
        };
        let mut f = RateForecast::default();
        assert_eq!(f.block_size(&sizing, 60_000), 1_000);
        f.observe(1_000_000, 1_000);
        assert_eq!(f.block_size(&sizing, 60_000), 50_000);
    }
}
