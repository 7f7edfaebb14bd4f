//! The warm-up curve: a new number's daily allowance, day by day.

use crate::error::Error;

/// Sends per day allowed to a chip on each day after its activation: the first entry is day 1
/// (the first 24 hours), and the last entry holds from then on.
///
/// ```
/// use tenant_isolation::WarmupCurve;
/// let curve = WarmupCurve::new(vec![20, 40, 80])?;
/// assert_eq!(curve.per_day(1), 20);
/// assert_eq!(curve.per_day(2), 40);
/// assert_eq!(curve.per_day(30), 80);
/// # Ok::<(), tenant_isolation::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmupCurve {
    per_day: Vec<u32>,
}

impl WarmupCurve {
    /// A curve from its daily allowances.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if it is empty, has a zero, or ever decreases.
    pub fn new(per_day: Vec<u32>) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidConfig {
            reason: format!("warm-up curve: {reason}"),
        };
        if per_day.is_empty() {
            return Err(invalid("it needs at least one day"));
        }
        if per_day.contains(&0) {
            return Err(invalid("every day must allow at least one send"));
        }
        if per_day.windows(2).any(|w| w[1] < w[0]) {
            return Err(invalid(
                "allowances must not decrease from one day to the next",
            ));
        }
        Ok(WarmupCurve { per_day })
    }

    /// A flat allowance: no warm-up.
    pub fn flat(per_day: u32) -> Result<Self, Error> {
        Self::new(vec![per_day])
    }

    /// The allowance on `day` (1 is the first day; 0 is treated as 1).
    pub fn per_day(&self, day: u32) -> u32 {
        let index = usize::try_from(day.saturating_sub(1)).unwrap_or(usize::MAX);
        self.per_day
            .get(index)
            .or(self.per_day.last())
            .copied()
            .unwrap_or(1)
    }

    /// The daily allowances, day 1 first.
    pub fn days(&self) -> &[u32] {
        &self.per_day
    }
}

impl Default for WarmupCurve {
    /// A conservative curve for new numbers: 20, 40, 80, 150, 250, 400, 600, then 1000 a day.
    fn default() -> Self {
        WarmupCurve {
            per_day: vec![20, 40, 80, 150, 250, 400, 600, 1000],
        }
    }
}
