//! Summaries of repeated measurements (median and spread; the machine is shared and noisy).

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Self { n: v.len(), min: v[0], median: at(0.5), p90: at(0.9), p99: at(0.99), max: v[v.len() - 1] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90_of_ten() {
        let s = Summary::of(&[10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        assert_eq!((s.n, s.min, s.max), (10, 1.0, 10.0));
        assert_eq!(s.median, 6.0); // index round(4.5) = 5 of 1..=10 (upper median)
        assert_eq!(s.p90, 9.0);
        assert_eq!(Summary::of(&[]).n, 0);
    }
}
