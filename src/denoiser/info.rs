//! What a model says about itself: ONNX `metadata_props` or a sidecar `<model>.json`, with
//! the seed's conventions where both are silent.
use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::sampler::Prediction;
use crate::schedule::{BetaSchedule, ScheduleConfig};

/// Settings that travel with a model (diffusers' scheduler-config names).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub schedule: ScheduleConfig,
    pub prediction: Prediction,
    /// Model-space values that map to pixel 0 and 255.
    pub pixel_range: (f32, f32),
    /// Where each setting came from: "metadata", "sidecar" or "default".
    pub sources: BTreeMap<&'static str, &'static str>,
}

/// Training timesteps a model may declare (diffusers' models use 1000 to 4000).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;
/// β values that keep every schedule quantity finite in f32: ᾱ_t well below 1 after the
/// first step and above 0 (diffusers clips its cosine schedule's β to 0.999).
pub const BETA_RANGE: (f64, f64) = (1e-6, 0.999);

pub const KEYS: [&str; 8] = [
    "name",
    "beta_schedule",
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "prediction_type",
    "pixel_min",
    "pixel_max",
];

impl ModelInfo {
    /// Merges ONNX metadata (first) and sidecar values (second) over the seed's defaults.
    /// `origin` names the model in errors.
    pub fn resolve(
        origin: &str,
        default_name: &str,
        metadata: &BTreeMap<String, String>,
        sidecar: &BTreeMap<String, String>,
    ) -> Result<ModelInfo> {
        let mut sources = BTreeMap::new();
        let mut get = |key: &'static str| -> Option<String> {
            if let Some(v) = metadata.get(key) {
                sources.insert(key, "metadata");
                Some(v.trim().to_string())
            } else if let Some(v) = sidecar.get(key) {
                sources.insert(key, "sidecar");
                Some(v.trim().to_string())
            } else {
                sources.insert(key, "default");
                None
            }
        };
        let bad = |key: &str, v: &str, why: &str| {
            Error::model(origin, format!("setting {key} = '{v}' is invalid: {why}"))
        };
        let num = |key: &'static str, v: Option<String>, default: f64| -> Result<f64> {
            match v {
                None => Ok(default),
                Some(v) => match v.parse::<f64>() {
                    Ok(x) if x.is_finite() && (x as f32).is_finite() => Ok(x),
                    Ok(_) => Err(bad(key, &v, "not a finite number")),
                    Err(_) => Err(bad(key, &v, "not a number")),
                },
            }
        };
        let d = ScheduleConfig::default();
        let name = get("name").unwrap_or_else(|| default_name.to_string());
        let beta_schedule = match get("beta_schedule") {
            None => d.beta_schedule,
            Some(v) => v
                .parse::<BetaSchedule>()
                .map_err(|e| bad("beta_schedule", &v, &e))?,
        };
        let t = num(
            "num_train_timesteps",
            get("num_train_timesteps"),
            d.num_train_timesteps as f64,
        )?;
        if t.fract() != 0.0 || !(2.0..=MAX_TRAIN_TIMESTEPS as f64).contains(&t) {
            return Err(bad(
                "num_train_timesteps",
                &t.to_string(),
                &format!("not an integer in 2..={MAX_TRAIN_TIMESTEPS}"),
            ));
        }
        let (start_text, end_text) = (get("beta_start"), get("beta_end"));
        let beta_start = num("beta_start", start_text.clone(), d.beta_start)?;
        let beta_end = num("beta_end", end_text.clone(), d.beta_end)?;
        let shown = |text: Option<String>, v: f64| text.unwrap_or_else(|| v.to_string());
        if !(BETA_RANGE.0..=BETA_RANGE.1).contains(&beta_start) {
            return Err(bad(
                "beta_start",
                &shown(start_text, beta_start),
                &format!("outside [{}, {}]", BETA_RANGE.0, BETA_RANGE.1),
            ));
        }
        if !(beta_start..=BETA_RANGE.1).contains(&beta_end) {
            return Err(bad(
                "beta_end",
                &shown(end_text, beta_end),
                &format!("outside [beta_start = {beta_start}, {}]", BETA_RANGE.1),
            ));
        }
        let prediction = match get("prediction_type") {
            None => Prediction::Epsilon,
            Some(v) => v
                .parse::<Prediction>()
                .map_err(|e| bad("prediction_type", &v, &e))?,
        };
        let lo = num("pixel_min", get("pixel_min"), -1.0)? as f32;
        let hi = num("pixel_max", get("pixel_max"), 1.0)? as f32;
        if lo >= hi {
            return Err(bad("pixel_min", &lo.to_string(), "must be below pixel_max"));
        }
        Ok(ModelInfo {
            name,
            schedule: ScheduleConfig {
                beta_schedule,
                num_train_timesteps: t as usize,
                beta_start,
                beta_end,
            },
            prediction,
            pixel_range: (lo, hi),
            sources,
        })
    }
}

/// Reads a sidecar JSON object; values may be strings or numbers.
pub fn parse_sidecar(path: &std::path::Path, text: &str) -> Result<BTreeMap<String, String>> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::input(format!("{}: invalid JSON: {e}", path.display())))?;
    let obj = v.as_object().ok_or_else(|| {
        Error::input(format!(
            "{}: expected a JSON object of model settings",
            path.display()
        ))
    })?;
    let mut settings = BTreeMap::new();
    for (k, v) in obj {
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            // Other tools' keys may hold anything; ours are strings or numbers.
            _ if !KEYS.contains(&k.as_str()) => continue,
            other => {
                return Err(Error::input(format!(
                    "{}: setting {k} is {}, expected a string or a number",
                    path.display(),
                    match other {
                        serde_json::Value::Null => "null",
                        serde_json::Value::Bool(_) => "a boolean",
                        serde_json::Value::Array(_) => "an array",
                        _ => "an object",
                    }
                )))
            }
        };
        settings.insert(k.clone(), s);
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds() {
        let i = ModelInfo::resolve("m", "m", &BTreeMap::new(), &BTreeMap::new()).unwrap();
        assert!(i.schedule.is_seed());
        assert_eq!(i.prediction, Prediction::Epsilon);
        assert_eq!(i.sources["beta_start"], "default");
    }

    #[test]
    fn metadata_wins_over_sidecar() {
        let md: BTreeMap<_, _> =
            [("prediction_type".to_string(), "v_prediction".to_string())].into();
        let sc: BTreeMap<_, _> = [
            ("prediction_type".to_string(), "sample".to_string()),
            ("beta_schedule".to_string(), "squaredcos_cap_v2".to_string()),
        ]
        .into();
        let i = ModelInfo::resolve("m", "m", &md, &sc).unwrap();
        assert_eq!(i.prediction, Prediction::V);
        assert_eq!(i.schedule.beta_schedule, BetaSchedule::Cosine);
        assert_eq!(i.sources["beta_schedule"], "sidecar");
    }

    #[test]
    fn non_finite_out_of_range_and_mistyped_settings_are_refused() {
        let resolve = |k: &str, v: &str| {
            let md: BTreeMap<_, _> = [(k.to_string(), v.to_string())].into();
            ModelInfo::resolve("m.onnx", "m", &md, &BTreeMap::new())
        };
        for (k, v, why) in [
            ("pixel_min", "NaN", "not a finite number"),
            ("pixel_max", "inf", "not a finite number"),
            ("pixel_max", "1e39", "not a finite number"),
            ("beta_start", "1e-300", "outside [0.000001, 0.999]"),
            (
                "beta_end",
                "0.99999",
                "outside [beta_start = 0.0001, 0.999]",
            ),
            ("beta_end", "0.00001", "outside [beta_start"),
            (
                "num_train_timesteps",
                "1e12",
                "not an integer in 2..=100000",
            ),
        ] {
            let e = resolve(k, v).unwrap_err().to_string();
            assert!(
                e.contains(&format!("setting {k} = ")) && e.contains(why),
                "{k}={v}: {e}"
            );
        }
        let path = std::path::Path::new("m.json");
        let e = parse_sidecar(path, r#"{"beta_start": [0.1]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("setting beta_start is an array"), "{e}");
        let e = parse_sidecar(path, r#"{"pixel_min": null}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("setting pixel_min is null"), "{e}");
        // Keys of other tools pass whatever they hold.
        assert!(parse_sidecar(path, r#"{"_class_name": ["DDPM"], "name": "x"}"#).is_ok());
    }

    #[test]
    fn bad_values_name_the_setting() {
        let md: BTreeMap<_, _> = [("beta_start".to_string(), "abc".to_string())].into();
        let e = ModelInfo::resolve("m.onnx", "m", &md, &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("beta_start"), "{e}");
    }
}
