//! Board profiles (boards/*.toml, compiled into the binary): target, cores, precision and
//! the usual screen wiring of each supported board, and detection from the device tree.
use serde::Deserialize;

use crate::denoiser::Precision;
use crate::display::ScreenConfig;
use crate::error::{Error, Result};

/// The profiles shipped in boards/, in listing order.
const PROFILES: &[(&str, &str)] = &[
    ("pi-zero-2w", include_str!("../boards/pi-zero-2w.toml")),
    ("pi3", include_str!("../boards/pi3.toml")),
    ("pi4", include_str!("../boards/pi4.toml")),
    ("pi5", include_str!("../boards/pi5.toml")),
    ("jetson-nano", include_str!("../boards/jetson-nano.toml")),
    (
        "jetson-orin-nano",
        include_str!("../boards/jetson-orin-nano.toml"),
    ),
];

/// Where the kernel names the board; `EDGE_SAMPLE_DT_MODEL` points elsewhere (tests).
pub const DT_MODEL: &str = "/proc/device-tree/model";

/// A board profile.
#[derive(Clone, Debug)]
pub struct Board {
    pub name: String,
    pub title: String,
    /// Substrings of /proc/device-tree/model that identify the board.
    pub matches: Vec<String>,
    pub target: String,
    pub cpu: String,
    pub cores: usize,
    precision: Precision,
    /// Screens in the order `--display auto` tries them.
    pub screens: Vec<ScreenConfig>,
}

/// A profile file as written; [`parse`] checks it into a [`Board`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    name: String,
    title: String,
    #[serde(rename = "match")]
    matches: Vec<String>,
    target: String,
    cpu: String,
    cores: usize,
    precision: String,
    #[serde(default, rename = "screen")]
    screens: Vec<ScreenConfig>,
}

impl Board {
    /// The arithmetic the board runs best (`--precision auto` takes it).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The profile's screen of `kind`, if it has one.
    pub fn screen(&self, kind: crate::display::Kind) -> Option<&ScreenConfig> {
        self.screens.iter().find(|s| s.kind == kind)
    }
}

/// Reads the profile `text` of boards/`file`.toml; errors name the file.
pub fn parse(file: &str, text: &str) -> Result<Board> {
    let bad = |msg: &str| Error::input(format!("boards/{file}.toml: {msg}"));
    let p = toml::from_str::<Profile>(text)
        .map_err(|e| bad(e.to_string().lines().next().unwrap_or("invalid")))?;
    // Precision's own message names the bad value and the valid choices.
    let precision = p.precision.parse::<Precision>().map_err(|e| bad(&e))?;
    Ok(Board {
        name: p.name,
        title: p.title,
        matches: p.matches,
        target: p.target,
        cpu: p.cpu,
        cores: p.cores,
        precision,
        screens: p.screens,
    })
}

/// Every shipped profile.
pub fn all() -> Result<Vec<Board>> {
    PROFILES
        .iter()
        .map(|(file, text)| parse(file, text))
        .collect()
}

/// The profile called `name`.
pub fn find(name: &str) -> Result<Board> {
    let boards = all()?;
    let names: Vec<&str> = boards.iter().map(|b| b.name.as_str()).collect();
    let found = boards.iter().find(|b| b.name == name).cloned();
    found.ok_or_else(|| {
        Error::usage(format!(
            "unknown board '{name}' (valid: auto, none, {})",
            names.join(", ")
        ))
    })
}

/// The profile whose match strings occur in a device-tree model string.
pub fn match_model(model: &str) -> Result<Option<Board>> {
    let model = model.trim_end_matches('\0').trim();
    Ok(all()?
        .into_iter()
        .find(|b| b.matches.iter().any(|m| model.contains(m.as_str()))))
}

/// The board this runs on, from the device tree (None on a PC or an unknown board).
pub fn detect() -> Result<Option<Board>> {
    let path = std::env::var("EDGE_SAMPLE_DT_MODEL").unwrap_or_else(|_| DT_MODEL.to_string());
    match std::fs::read(&path) {
        Ok(bytes) => match_model(&String::from_utf8_lossy(&bytes)),
        Err(_) => Ok(None),
    }
}

/// `--board`: `auto` detects, `none` uses no profile, anything else names one.
pub fn resolve(arg: &str) -> Result<Option<Board>> {
    match arg {
        "auto" => detect(),
        "none" => Ok(None),
        name => find(name).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::display::Kind;

    #[test]
    fn every_profile_parses_and_is_named_after_its_file() {
        let boards = all().unwrap();
        assert_eq!(boards.len(), PROFILES.len());
        for (b, (file, _)) in boards.iter().zip(PROFILES) {
            assert_eq!(&b.name, file);
            assert!(!b.screens.is_empty(), "{} has screens", b.name);
            assert!(b.cores >= 4);
            assert!(
                matches!(b.precision(), Precision::F32 | Precision::F16),
                "{}",
                b.name
            );
            for s in b.screens.iter().filter(|s| s.kind.is_tft()) {
                assert!(s.dc.is_some(), "{}: a TFT needs its DC line", b.name);
            }
        }
    }

    #[test]
    fn a_bad_precision_names_the_file_the_value_and_the_choices() {
        let text = PROFILES[0]
            .1
            .replace("precision = \"f32\"", "precision = \"f8\"");
        assert_ne!(text, PROFILES[0].1, "the profile sets its precision");
        let e = parse("broken", &text).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.to_string(),
            "boards/broken.toml: unknown precision 'f8' (valid: auto, f32, f16)"
        );
    }

    #[test]
    fn device_tree_models_pick_the_right_board() {
        let cases = [
            ("Raspberry Pi Zero 2 W Rev 1.0\0", "pi-zero-2w"),
            ("Raspberry Pi 3 Model B Plus Rev 1.3\0", "pi3"),
            ("Raspberry Pi 4 Model B Rev 1.4\0", "pi4"),
            ("Raspberry Pi 5 Model B Rev 1.0\0", "pi5"),
            ("NVIDIA Jetson Nano Developer Kit\0", "jetson-nano"),
            (
                "NVIDIA Jetson Orin Nano Developer Kit\0",
                "jetson-orin-nano",
            ),
        ];
        for (model, name) in cases {
            assert_eq!(match_model(model).unwrap().unwrap().name, name, "{model}");
        }
        assert!(match_model("QEMU Virtual Machine").unwrap().is_none());
    }

    #[test]
    fn pi_hat_wiring() {
        let pi4 = find("pi4").unwrap();
        let tft = pi4.screen(Kind::St7789).unwrap();
        assert_eq!(
            (tft.dc, tft.rst, tft.backlight),
            (Some(25), Some(27), Some(24))
        );
        assert_eq!(tft.device(), "/dev/spidev0.0");
        assert_eq!(pi4.precision(), Precision::F32);
        // f32 on the Pi 5 too: our f32 NEON kernels need fewer instructions than tract's f16.
        assert_eq!(find("pi5").unwrap().precision(), Precision::F32);
        let e = find("pi6").unwrap_err().to_string();
        assert!(
            e.contains("unknown board 'pi6'") && e.contains("pi-zero-2w"),
            "{e}"
        );
    }
}
