//! Pass/fail thresholds such as `p(95)<500`, `avg<200`, `error_rate<0.01`,
//! `rps>1000` or `checks>0.99`, parsed from text and judged on a summary.
//!
//! Metrics: `p(N)` (latency percentile, ms), `avg`, `min`, `max`, `med`
//! (ms), `error_rate` and `success_rate` (fractions of requests), `checks`
//! (fraction of checks that passed; 1 when none ran), `rps`, `requests`,
//! `dropped_iterations`.

use serde::{Deserialize, Serialize};

use crate::error::ThresholdError;
use crate::report::Summary;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Percentile(f64),
    Avg,
    Min,
    Max,
    Med,
    ErrorRate,
    SuccessRate,
    Checks,
    Rps,
    Requests,
    DroppedIterations,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// A parsed threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub expr: String,
    pub metric: Metric,
    pub op: Op,
    pub value: f64,
}

/// A threshold judged against a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    pub expr: String,
    /// The metric's value in the run.
    pub observed: f64,
    pub passed: bool,
}

impl Threshold {
    pub fn parse(expr: &str) -> Result<Threshold, ThresholdError> {
        let err = |reason: &str| ThresholdError {
            expr: expr.to_string(),
            reason: reason.to_string(),
        };
        let s: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
        let op_at = s
            .find(['<', '>', '=', '!'])
            .ok_or_else(|| err("missing comparison (<, <=, >, >=, ==, !=)"))?;
        let (lhs, rest) = s.split_at(op_at);
        let (op, rhs) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .iter()
        .find_map(|(t, op)| rest.strip_prefix(t).map(|r| (*op, r)))
        .ok_or_else(|| err("unknown comparison"))?;
        let value: f64 = rhs
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| err(&format!("{rhs:?} is not a number")))?;
        let metric = match lhs {
            "avg" => Metric::Avg,
            "min" => Metric::Min,
            "max" => Metric::Max,
            "med" => Metric::Med,
            "error_rate" => Metric::ErrorRate,
            "success_rate" => Metric::SuccessRate,
            "checks" => Metric::Checks,
            "rps" => Metric::Rps,
            "requests" => Metric::Requests,
            "dropped_iterations" => Metric::DroppedIterations,
            "" => return Err(err("missing metric")),
            other => {
                let inner = other
                    .strip_prefix("p(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| err(&format!("unknown metric {other:?}")))?;
                let p: f64 = inner
                    .parse()
                    .ok()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| err(&format!("percentile {inner:?} is not within 0..100")))?;
                Metric::Percentile(p)
            }
        };
        Ok(Threshold {
            expr: expr.to_string(),
            metric,
            op,
            value,
        })
    }

    /// The metric's value in `s`.
    pub fn observe(&self, s: &Summary) -> f64 {
        match self.metric {
            Metric::Percentile(p) => s.percentile_ms(p),
            Metric::Avg => s.avg_ms,
            Metric::Min => s.min_ms,
            Metric::Max => s.max_ms,
            Metric::Med => s.p50_ms,
            Metric::ErrorRate => s.error_rate,
            Metric::SuccessRate => s.success_rate,
            Metric::Checks => s.checks_rate,
            Metric::Rps => s.rps,
            Metric::Requests => s.requests as f64,
            Metric::DroppedIterations => s.dropped_iterations as f64,
        }
    }

    pub fn judge(&self, s: &Summary) -> ThresholdResult {
        let observed = self.observe(s);
        ThresholdResult {
            expr: self.expr.clone(),
            observed,
            passed: self.op.holds(observed, self.value),
        }
    }
}

/// Parses every expression; the first bad one is named in the error.
pub fn parse_all(exprs: &[String]) -> Result<Vec<Threshold>, ThresholdError> {
    exprs.iter().map(|e| Threshold::parse(e)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let t = Threshold::parse("p(95)<500").unwrap();
        assert_eq!(t.metric, Metric::Percentile(95.0));
        assert_eq!(t.op, Op::Lt);
        assert_eq!(t.value, 500.0);
        assert_eq!(Threshold::parse("p(99.9) <= 800").unwrap().op, Op::Le);
        assert_eq!(
            Threshold::parse("error_rate<0.01").unwrap().metric,
            Metric::ErrorRate
        );
        assert_eq!(Threshold::parse("rps>1000").unwrap().op, Op::Gt);
        assert_eq!(
            Threshold::parse("checks>0.99").unwrap().metric,
            Metric::Checks
        );
        assert_eq!(Threshold::parse("avg<200").unwrap().metric, Metric::Avg);
        for bad in ["p(95)", "p(101)<5", "latency<5", "avg<abc", "<5", "avg=<5"] {
            let e = Threshold::parse(bad).unwrap_err();
            assert_eq!(e.expr, bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
