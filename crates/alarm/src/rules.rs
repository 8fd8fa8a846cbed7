//! Alarm rules: which threshold, horizon, window and forecast method apply to a series.

use crate::forecast::{Forecaster, Holt, Linear, Persistence, Robust, RobustParams, Shape};
use procwatch_model::Metric;
use serde::Deserialize;

pub use procwatch_model::glob::{Glob, GlobError, MAX_GLOB_LEN, MAX_GLOB_WILDCARDS};

/// The forecast method of a rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// procwatch's default ([`Robust`]); `sensitivity` and `shape` `None` = the metric's
    /// default ([`default_sensitivity`], [`default_shape`]; filled by [`Method::for_metric`]).
    Procwatch {
        /// Noise widths of margin (higher = more AMBER).
        sensitivity: Option<f64>,
        /// The forecaster's structure (windows, damping, σ floor, hold-off). Rules do not
        /// set it: it is the metric's default, resolved by [`Method::for_metric`].
        shape: Option<Shape>,
    },
    /// `predict_linear` over the rule's window.
    Linear,
    /// Holt's linear smoothing, per sample.
    Holt {
        /// The level weight.
        alpha: f64,
        /// The trend weight.
        beta: f64,
    },
    /// `f = y` (never AMBER).
    Persistence,
}

/// The default sensitivity of procwatch's forecaster for a metric: the value the
/// leave-one-trace-out cross-validation picks on all traces of the metric's family
/// (BENCHMARKS.md, Forecaster; `procwatch alarm backtest --cv` prints it). `cores` uses the
/// cpu value.
pub fn default_sensitivity(metric: Metric) -> f64 {
    match metric {
        Metric::Mem => DEFAULT_SENSITIVITY_MEM,
        // The extras (issue 19) take the cpu family's knob: no traces score them yet.
        _ => DEFAULT_SENSITIVITY_CPU,
    }
}

/// Chosen by `procwatch alarm backtest --cv` on the memory traces.
pub const DEFAULT_SENSITIVITY_MEM: f64 = 1.0;
/// Chosen by `procwatch alarm backtest --cv` on the CPU traces (without the asg trace).
pub const DEFAULT_SENSITIVITY_CPU: f64 = 1.0;

/// The default shape of procwatch's forecaster for a metric, chosen with its sensitivity:
/// the shape the same criterion picks on all traces of the metric's family ([`Shape::MEMORY`]
/// for mem, [`Shape::CPU`] for cpu; `tests/heldout.rs` checks both against the
/// cross-validation). `cores` and the extras use the cpu shape, as they use its knob.
pub fn default_shape(metric: Metric) -> Shape {
    match metric {
        Metric::Mem => Shape::MEMORY,
        _ => Shape::CPU,
    }
}

/// procwatch's forecaster's parameters: what is unset takes the cpu default.
fn procwatch_params(
    sensitivity: Option<f64>,
    shape: Option<Shape>,
    horizon_ms: i64,
) -> RobustParams {
    shape.unwrap_or(Shape::CPU).params(horizon_ms, sensitivity.unwrap_or(DEFAULT_SENSITIVITY_CPU))
}

impl Method {
    /// procwatch's forecaster at its metric's default shape and sensitivity.
    pub const PROCWATCH: Method = Method::Procwatch { sensitivity: None, shape: None };

    /// This method with an unset sensitivity and shape filled from `metric`'s defaults.
    pub fn for_metric(self, metric: Metric) -> Method {
        match self {
            Method::Procwatch { sensitivity, shape } => Method::Procwatch {
                sensitivity: sensitivity.or(Some(default_sensitivity(metric))),
                shape: shape.or(Some(default_shape(metric))),
            },
            m => m,
        }
    }

    /// The parameters [`Method::forecaster`] builds procwatch's forecaster with for a horizon
    /// `horizon_ms` (`None` for the other methods). What is unset takes the cpu default:
    /// resolve it with [`Method::for_metric`] first.
    pub fn robust_params(&self, horizon_ms: i64) -> Option<RobustParams> {
        match *self {
            Method::Procwatch { sensitivity, shape } => {
                Some(procwatch_params(sensitivity, shape, horizon_ms))
            }
            _ => None,
        }
    }

    /// A fresh forecaster for a series sampled every `interval_ms` (an unset sensitivity or
    /// shape takes the cpu default: resolve it with [`Method::for_metric`] first).
    pub fn forecaster(
        &self,
        window_ms: i64,
        horizon_ms: i64,
        interval_ms: i64,
    ) -> Box<dyn Forecaster> {
        match *self {
            Method::Procwatch { sensitivity, shape } => {
                Box::new(Robust::new(procwatch_params(sensitivity, shape, horizon_ms)))
            }
            Method::Linear => Box::new(Linear::new(Linear::samples_for(window_ms, interval_ms))),
            Method::Holt { alpha, beta } => Box::new(Holt::new(alpha, beta, interval_ms)),
            Method::Persistence => Box::new(Persistence::default()),
        }
    }

    /// How much history this method's forecaster itself needs before it forecasts, ms:
    /// procwatch's forecaster fits its trend over its shape's trend window (at the defaults
    /// 30 min for cpu, 1 h for mem: resolve the method for the series' metric first with
    /// [`Method::for_metric`]), `linear` needs its window, Holt and persistence forecast from
    /// the first sample. The engine also waits for a full rule window before AMBER, so a
    /// series' warm-up is the larger of the two (see `Engine::warmups`).
    pub fn warmup_ms(&self, window_ms: i64, horizon_ms: i64) -> i64 {
        match *self {
            Method::Procwatch { sensitivity, shape } => {
                let p = procwatch_params(sensitivity, shape, horizon_ms);
                i64::from(p.trend) * p.step_ms
            }
            Method::Linear => window_ms,
            Method::Holt { .. } | Method::Persistence => 0,
        }
    }

    /// Parses a method name; Holt takes `alpha` and `beta`.
    pub fn parse(name: &str, alpha: f64, beta: f64) -> Result<Self, RuleError> {
        match name {
            "procwatch" | "default" => Ok(Method::PROCWATCH),
            "linear" | "predict_linear" => Ok(Method::Linear),
            "holt" => Ok(Method::Holt { alpha, beta }),
            "persistence" => Ok(Method::Persistence),
            other => Err(RuleError::Method(other.to_owned())),
        }
    }
}

/// A rule or default that does not make sense.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RuleError {
    /// A host or process glob that does not parse.
    #[error("bad glob: {0}")]
    Glob(String),
    /// A `method` that is not one of the four.
    #[error("unknown forecast method {0:?}: expected procwatch, linear, holt or persistence")]
    Method(String),
    /// A `horizon` or `window` that is not a duration: the text and why.
    #[error("bad duration {0:?}: {1}")]
    Duration(String, String),
    /// Settings that contradict each other or are out of range (the message says which).
    #[error("{0}")]
    Invalid(String),
}

impl From<GlobError> for RuleError {
    fn from(e: GlobError) -> Self {
        RuleError::Glob(e.0)
    }
}

/// A resolved rule: every setting is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Hosts the rule applies to.
    pub host: Glob,
    /// Processes the rule applies to.
    pub process: Glob,
    /// `None` matches cpu and mem (the always-evaluated metrics).
    pub metric: Option<Metric>,
    /// T, in the metric's unit.
    pub threshold: f64,
    /// How far below T the value must fall for RED to clear.
    pub hysteresis: f64,
    /// Evaluations below `T − hysteresis` before RED clears.
    pub clear_for: u32,
    /// H, how far ahead AMBER looks, ms.
    pub horizon_ms: i64,
    /// W, the history the forecast is made from, ms.
    pub window_ms: i64,
    /// Evaluations in a row the forecast must be above T for AMBER.
    pub debounce: u32,
    /// The forecaster.
    pub method: Method,
}

impl Default for Rule {
    /// T = 80, hysteresis 5, clear_for 2, H = 10 min, W = 10 min, debounce 2, procwatch's
    /// forecaster, every host and process.
    fn default() -> Self {
        Self {
            host: Glob::default(),
            process: Glob::default(),
            metric: None,
            threshold: 80.0,
            hysteresis: 5.0,
            clear_for: 2,
            horizon_ms: 600_000,
            window_ms: 600_000,
            debounce: 2,
            method: Method::PROCWATCH,
        }
    }
}

impl Rule {
    pub(crate) fn matches(&self, host: &str, process: &str, metric: Metric) -> bool {
        let metric_ok = match self.metric {
            Some(m) => m == metric,
            None => !metric.needs_rule(),
        };
        metric_ok && self.host.matches(host) && self.process.matches(process)
    }

    fn validate(self) -> Result<Self, RuleError> {
        let bad = |what: &str| Err(RuleError::Invalid(what.to_owned()));
        if !self.threshold.is_finite() || !self.hysteresis.is_finite() || self.hysteresis < 0.0 {
            return bad("threshold and hysteresis must be finite, hysteresis ≥ 0");
        }
        if self.threshold > 0.0 && self.hysteresis >= self.threshold {
            // RED clears below T − hysteresis: at or under 0 it could never clear.
            return Err(RuleError::Invalid(format!(
                "hysteresis {} must be less than the threshold {} (RED clears below threshold − hysteresis); write it relative to the threshold, e.g. \"10%\"",
                self.hysteresis, self.threshold
            )));
        }
        if self.horizon_ms <= 0 || self.window_ms <= 0 {
            return bad("horizon and window must be positive");
        }
        if let Method::Holt { alpha, beta } = self.method {
            if !(0.0..=1.0).contains(&alpha) || !(0.0..=1.0).contains(&beta) {
                return bad("holt alpha and beta must be in 0..=1");
            }
        }
        if let Method::Procwatch { sensitivity: Some(z), .. } = self.method {
            if !crate::forecast::SENSITIVITY_RANGE.contains(&z) {
                return Err(RuleError::Invalid(format!(
                    "sensitivity {z} is out of range: expected a number of noise widths in \
                     {}..={} (higher = more AMBER warnings)",
                    crate::forecast::SENSITIVITY_RANGE.start(),
                    crate::forecast::SENSITIVITY_RANGE.end()
                )));
            }
        }
        Ok(self)
    }
}

/// One `[[rules]]` table (or `[alarm_defaults]`) as written in TOML; unset fields inherit.
///
/// ```toml
/// [[rules]]
/// host = "db-*"
/// process = "postgres"
/// metric = "mem"
/// threshold = 90
/// horizon = "30m"
/// method = "linear"
/// window = "15m"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Hosts (a glob); unset: all.
    pub host: Option<Glob>,
    /// Processes (a glob); unset: all.
    pub process: Option<Glob>,
    /// The metric; unset: cpu and mem.
    pub metric: Option<Metric>,
    /// T; unset: inherited.
    pub threshold: Option<f64>,
    /// In the metric's unit (`5`) or relative to the threshold (`"10%"`); unset: 1/16 of
    /// the threshold (5 points at the default 80 %).
    pub hysteresis: Option<Hysteresis>,
    /// Evaluations below `T − hysteresis` before RED clears.
    pub clear_for: Option<u32>,
    /// A duration such as `10m`.
    pub horizon: Option<String>,
    /// A duration such as `1h`: the history the forecast is made from.
    pub window: Option<String>,
    /// Evaluations in a row the forecast must be above T for AMBER.
    pub debounce: Option<u32>,
    /// `procwatch`, `linear`, `holt` or `persistence`.
    pub method: Option<String>,
    /// Holt's level weight (with `method = "holt"`).
    pub alpha: Option<f64>,
    /// Holt's trend weight (with `method = "holt"`).
    pub beta: Option<f64>,
    /// procwatch's forecaster: noise widths of margin (higher = more AMBER). Only with
    /// `method = "procwatch"` (the default).
    pub sensitivity: Option<f64>,
    /// Only in `[alarm_defaults]`: the threshold, in cores, of the built-in rule on the
    /// `cores` basis (a process saturating a core); `0` turns that rule off.
    pub cores_threshold: Option<f64>,
}

/// The default hysteresis: this share of the threshold (5 points at T = 80).
pub const DEFAULT_HYSTERESIS_RATIO: f64 = 1.0 / 16.0;
/// The built-in `cores` rule's threshold: a process using more than 0.9 of one core.
pub const DEFAULT_CORES_THRESHOLD: f64 = 0.9;

/// How far below the threshold RED clears: an amount in the metric's unit, or a share of the
/// threshold written `"N%"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hysteresis {
    /// An amount in the metric's unit.
    Absolute(f64),
    /// A fraction of the threshold (`"10%"` is 0.1).
    Relative(f64),
}

impl Hysteresis {
    /// The amount for a rule at `threshold`.
    pub fn for_threshold(self, threshold: f64) -> f64 {
        match self {
            Hysteresis::Absolute(h) => h,
            Hysteresis::Relative(r) => (r * threshold).abs(),
        }
    }
}

impl<'de> Deserialize<'de> for Hysteresis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(Hysteresis::Absolute(n)),
            Raw::Text(t) => t
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .filter(|n| n.is_finite() && (0.0..100.0).contains(n))
                .map(|n| Hysteresis::Relative(n / 100.0))
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "hysteresis {t:?}: a number in the metric's unit (5) or a share of the threshold below 100% (\"10%\")"
                    ))
                }),
        }
    }
}

/// Parses a duration such as `10m`, `90s`, `1h 30m`.
pub fn parse_duration_ms(s: &str) -> Result<i64, RuleError> {
    procwatch_model::duration::parse_ms(s).map_err(|e| RuleError::Duration(e.text, e.reason))
}

impl RuleSpec {
    /// Fills the unset fields from `base`; an unset hysteresis is 1/16 of the threshold.
    pub fn resolve(&self, base: &Rule) -> Result<Rule, RuleError> {
        self.resolve_with(base, None)
    }

    /// Fills the unset fields from `base`; the hysteresis from this spec, else `inherited`
    /// (the defaults' own setting), else [`DEFAULT_HYSTERESIS_RATIO`] of the threshold, so a
    /// small threshold gets a small hysteresis.
    pub fn resolve_with(
        &self,
        base: &Rule,
        inherited: Option<Hysteresis>,
    ) -> Result<Rule, RuleError> {
        let (alpha, beta) = match base.method {
            Method::Holt { alpha, beta } => (alpha, beta),
            _ => (0.8, 0.4),
        };
        let method = match &self.method {
            Some(m) => Method::parse(m, self.alpha.unwrap_or(alpha), self.beta.unwrap_or(beta))?,
            None => match base.method {
                Method::Holt { .. } => Method::Holt {
                    alpha: self.alpha.unwrap_or(alpha),
                    beta: self.beta.unwrap_or(beta),
                },
                m => m,
            },
        };
        let method = match (method, self.sensitivity) {
            (Method::Procwatch { sensitivity, shape }, z) => {
                let (inherited, inherited_shape) = match base.method {
                    Method::Procwatch { sensitivity, shape } => (sensitivity, shape),
                    _ => (None, None),
                };
                Method::Procwatch {
                    sensitivity: z.or(sensitivity).or(inherited),
                    shape: shape.or(inherited_shape),
                }
            }
            (_, Some(_)) => {
                return Err(RuleError::Invalid(
                    "sensitivity only applies to method = \"procwatch\"".to_owned(),
                ))
            }
            (m, None) => m,
        };
        let threshold = self.threshold.unwrap_or(base.threshold);
        let hysteresis = self
            .hysteresis
            .or(inherited)
            .unwrap_or(Hysteresis::Relative(DEFAULT_HYSTERESIS_RATIO))
            .for_threshold(threshold);
        Rule {
            host: self.host.clone().unwrap_or_else(|| base.host.clone()),
            process: self.process.clone().unwrap_or_else(|| base.process.clone()),
            metric: self.metric.or(base.metric),
            threshold,
            hysteresis,
            clear_for: self.clear_for.unwrap_or(base.clear_for).max(1),
            horizon_ms: self
                .horizon
                .as_deref()
                .map(parse_duration_ms)
                .transpose()?
                .unwrap_or(base.horizon_ms),
            window_ms: self
                .window
                .as_deref()
                .map(parse_duration_ms)
                .transpose()?
                .unwrap_or(base.window_ms),
            debounce: self.debounce.unwrap_or(base.debounce).max(1),
            method,
        }
        .validate()
    }
}

/// The defaults plus the ordered rules. The first rule matching (host, process, metric)
/// wins; a series no rule matches uses the defaults. cpu and mem are always evaluated;
/// cores for series a rule names `metric = "cores"` for, and the built-in last rule is one:
/// every process above [`DEFAULT_CORES_THRESHOLD`] cores (a process saturating a core, which
/// on a many-core host is a small share of it), RED only (persistence, no forecast), unless
/// `cores_threshold = 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    /// The defaults (and the settings every rule inherits).
    pub defaults: Rule,
    /// The rules, first match wins.
    pub rules: Vec<Rule>,
}

impl Default for RuleSet {
    fn default() -> Self {
        Self::from_specs(&RuleSpec::default(), &[]).expect("the built-in defaults are valid")
    }
}

impl RuleSet {
    /// Resolves the TOML tables: `defaults` over [`Rule::default`], each rule over those,
    /// then the built-in `cores` rule.
    pub fn from_specs(defaults: &RuleSpec, rules: &[RuleSpec]) -> Result<Self, RuleError> {
        let inherited = defaults.hysteresis;
        let cores_threshold = defaults.cores_threshold.unwrap_or(DEFAULT_CORES_THRESHOLD);
        if !cores_threshold.is_finite() || cores_threshold < 0.0 {
            return Err(RuleError::Invalid(format!(
                "cores_threshold {cores_threshold}: a number of cores ≥ 0 (0 turns the built-in cores rule off)"
            )));
        }
        let defaults = defaults.resolve_with(&Rule::default(), None)?;
        let base = Rule {
            host: Glob::default(),
            process: Glob::default(),
            metric: None,
            ..defaults.clone()
        };
        let mut rules: Vec<Rule> = rules
            .iter()
            .map(|r| {
                if r.cores_threshold.is_some() {
                    return Err(RuleError::Invalid(
                        "cores_threshold belongs in [alarm_defaults], not in [[rules]]".into(),
                    ));
                }
                r.resolve_with(&base, inherited)
            })
            .collect::<Result<_, _>>()?;
        if cores_threshold > 0.0 {
            // RED only (persistence: never AMBER): the default forecaster is tuned for
            // percentages of a host, not for core counts.
            let spec = RuleSpec {
                metric: Some(Metric::Cores),
                threshold: Some(cores_threshold),
                method: Some("persistence".into()),
                ..Default::default()
            };
            rules.push(spec.resolve_with(&base, None)?);
        }
        Ok(Self { defaults: base, rules })
    }

    /// The rule for a series, if the metric is evaluated for it at all.
    pub fn rule_for(&self, host: &str, process: &str, metric: Metric) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.matches(host, process, metric))
            .or_else(|| (!metric.needs_rule()).then_some(&self.defaults))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_wins_and_cores_needs_a_rule() {
        let toml = r#"
            [defaults]
            threshold = 85
            [[rules]]
            host = "db-*"
            metric = "mem"
            threshold = 95
            horizon = "30m"
            method = "linear"
            [[rules]]
            host = "db-*"
            threshold = 70
            [[rules]]
            process = "java"
            metric = "cores"
            threshold = 4
        "#;
        #[derive(Deserialize)]
        struct File {
            defaults: RuleSpec,
            rules: Vec<RuleSpec>,
        }
        let f: File = toml::from_str(toml).unwrap();
        let set = RuleSet::from_specs(&f.defaults, &f.rules).unwrap();
        let r = set.rule_for("db-1", "pg", Metric::Mem).unwrap();
        assert_eq!((r.threshold, r.horizon_ms, r.method), (95.0, 1_800_000, Method::Linear));
        assert_eq!(set.rule_for("db-1", "pg", Metric::Cpu).unwrap().threshold, 70.0);
        assert_eq!(set.rule_for("web-1", "pg", Metric::Cpu).unwrap().threshold, 85.0);
        // cores: the built-in rule (a process saturating a core) unless a rule says otherwise.
        assert_eq!(set.rule_for("web-1", "pg", Metric::Cores).unwrap().threshold, 0.9);
        assert_eq!(set.rule_for("web-1", "java", Metric::Cores).unwrap().threshold, 4.0);
    }

    #[test]
    fn hysteresis_follows_the_threshold_and_never_exceeds_it() {
        let spec = |toml: &str| toml::from_str::<RuleSpec>(toml).unwrap();
        let set = RuleSet::default();
        // T = 80: 5 points as before; the built-in cores rule at 0.9: clears below ~0.84.
        assert_eq!(set.defaults.hysteresis, 5.0);
        let cores = set.rule_for("h", "p", Metric::Cores).unwrap();
        assert!(cores.hysteresis < cores.threshold && cores.hysteresis > 0.0, "{cores:?}");
        // A rule on cores at 0.5 with nothing said: 1/16 of 0.5.
        let rule = spec("metric = \"cores\"\nthreshold = 0.5");
        let set = RuleSet::from_specs(&RuleSpec::default(), &[rule]).unwrap();
        assert_eq!(set.rules[0].hysteresis, 0.5 / 16.0);
        // Relative, from the defaults: 10% of each rule's own threshold.
        let set = RuleSet::from_specs(
            &spec("hysteresis = \"10%\""),
            &[spec("metric = \"cores\"\nthreshold = 2")],
        )
        .unwrap();
        assert_eq!((set.defaults.hysteresis, set.rules[0].hysteresis), (8.0, 0.2));
        // Absolute 5 on a 0.5 threshold could never clear: refused, with the reason.
        let err = RuleSet::from_specs(
            &spec("hysteresis = 5"),
            &[spec("metric = \"cores\"\nthreshold = 0.5")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("less than the threshold"), "{err}");
        assert!(toml::from_str::<RuleSpec>("hysteresis = \"150%\"").is_err());
        // cores_threshold = 0: no built-in cores rule.
        let set = RuleSet::from_specs(&spec("cores_threshold = 0"), &[]).unwrap();
        assert_eq!(set.rule_for("h", "p", Metric::Cores), None);
    }

    #[test]
    fn bad_specs_are_rejected() {
        let bad_method = RuleSpec { method: Some("magic".into()), ..Default::default() };
        assert_eq!(bad_method.resolve(&Rule::default()), Err(RuleError::Method("magic".into())));
        let bad_duration = RuleSpec { horizon: Some("soon".into()), ..Default::default() };
        assert!(matches!(bad_duration.resolve(&Rule::default()), Err(RuleError::Duration(..))));
        let bad_alpha =
            RuleSpec { method: Some("holt".into()), alpha: Some(2.0), ..Default::default() };
        assert!(matches!(bad_alpha.resolve(&Rule::default()), Err(RuleError::Invalid(_))));
    }

    #[test]
    fn sensitivity_is_validated_inherited_and_defaults_per_metric() {
        let spec = |toml: &str| toml::from_str::<RuleSpec>(toml).unwrap();
        let defaults = spec("sensitivity = 1.5").resolve(&Rule::default()).unwrap();
        let set = |z: f64| Method::Procwatch { sensitivity: Some(z), shape: None };
        assert_eq!(defaults.method, set(1.5));
        // A rule inherits it, or sets its own.
        let r = spec(r#"process = "java""#).resolve(&defaults).unwrap();
        assert_eq!(r.method, set(1.5));
        let r = spec("sensitivity = -0.5").resolve(&defaults).unwrap();
        assert_eq!(r.method, set(-0.5));
        // Out of range, not a number of noise widths, or on another method: refused.
        for bad in ["sensitivity = 7", "sensitivity = nan", "method = \"linear\"\nsensitivity = 1"]
        {
            let err = spec(bad).resolve(&Rule::default()).unwrap_err();
            assert!(err.to_string().contains("sensitivity"), "{bad}: {err}");
        }
        // Unset: the metric's default knob and shape, chosen by the cross-validation; a
        // rule's own sensitivity keeps the metric's shape.
        let unset = Method::PROCWATCH;
        assert_eq!(
            unset.for_metric(Metric::Mem),
            Method::Procwatch {
                sensitivity: Some(DEFAULT_SENSITIVITY_MEM),
                shape: Some(Shape::MEMORY)
            }
        );
        assert_eq!(
            unset.for_metric(Metric::Cpu),
            Method::Procwatch {
                sensitivity: Some(DEFAULT_SENSITIVITY_CPU),
                shape: Some(Shape::CPU)
            }
        );
        assert_eq!(
            set(0.5).for_metric(Metric::Mem),
            Method::Procwatch { sensitivity: Some(0.5), shape: Some(Shape::MEMORY) }
        );
    }

    #[test]
    fn the_default_shape_is_per_metric_in_the_forecaster_and_the_warm_up() {
        let h = 600_000;
        let cpu = Method::PROCWATCH.for_metric(Metric::Cpu);
        let mem = Method::PROCWATCH.for_metric(Metric::Mem);
        assert_eq!(cpu.robust_params(h), Some(Shape::CPU.params(h, DEFAULT_SENSITIVITY_CPU)));
        assert_eq!(mem.robust_params(h), Some(Shape::MEMORY.params(h, DEFAULT_SENSITIVITY_MEM)));
        assert_eq!(Method::Linear.robust_params(h), None);
        // The trend window is the warm-up: 30 min for cpu, 1 h for mem; cores as cpu.
        assert_eq!(cpu.warmup_ms(h, h), 30 * 60_000);
        assert_eq!(mem.warmup_ms(h, h), 60 * 60_000);
        assert_eq!(Method::PROCWATCH.for_metric(Metric::Cores), cpu);
        assert_eq!(Method::Linear.warmup_ms(h, h), h);
    }
}
