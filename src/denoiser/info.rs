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
                Some(v) => v.parse::<f64>().map_err(|_| bad(key, &v, "not a number")),
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
        if t.fract() != 0.0 || t < 2.0 {
            return Err(bad(
                "num_train_timesteps",
                &t.to_string(),
                "not an integer >= 2",
            ));
        }
        let beta_start = num("beta_start", get("beta_start"), d.beta_start)?;
        let beta_end = num("beta_end", get("beta_end"), d.beta_end)?;
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
    Ok(obj
        .iter()
        .filter_map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.clone(), s))
        })
        .collect())
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
    fn bad_values_name_the_setting() {
        let md: BTreeMap<_, _> = [("beta_start".to_string(), "abc".to_string())].into();
        let e = ModelInfo::resolve("m.onnx", "m", &md, &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("beta_start"), "{e}");
    }
}
