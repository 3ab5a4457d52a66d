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

    /// Adds the next value of the series.
    pub fn observe(&mut self, x: f64) {
        match self.observations {
            0 => self.level = x,
            1 => {
                self.trend = x - self.level;
                self.level = x;
            }
            _ => {
                let prev = self.level;
                self.level = self.alpha * x + (1.0 - self.alpha) * (self.level + self.trend);
                self.trend = self.beta * (self.level - prev) + (1.0 - self.beta) * self.trend;
            }
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
}
