//! The screen simulator: renders exactly what a panel of a given size shows
//! (embedded-graphics-simulator, no SDL) and saves it as a PNG when a picture is finished.
use std::path::PathBuf;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics_simulator::{OutputSettingsBuilder, SimulatorDisplay};

use super::adapt::{Rotated, Rotation};
use super::layout::{draw_scene, Layout, Parts, Scene};
use super::screen::Screen;
use crate::error::{Error, Result};
use crate::image::{write_png, Pixels};
use crate::output::check_writable;

pub struct SimScreen {
    path: PathBuf,
    display: SimulatorDisplay<Rgb888>,
    rotation: Rotation,
}

impl SimScreen {
    /// A simulated panel of `size` (physical, before rotation) saved to `path`.
    pub fn new(path: PathBuf, size: Size, rotation: Rotation) -> Result<SimScreen> {
        check_writable(&path)?;
        Ok(SimScreen {
            path,
            display: SimulatorDisplay::new(size),
            rotation,
        })
    }

    /// The panel's pixels, RGB, rows top to bottom.
    pub fn pixels(&self) -> Pixels {
        let size = self.display.size();
        let img = self
            .display
            .to_rgb_output_image(&OutputSettingsBuilder::new().scale(1).build());
        Pixels {
            width: size.width as usize,
            height: size.height as usize,
            channels: 3,
            data: img.as_image_buffer().as_raw().to_vec(),
        }
    }

    /// Writes the panel to the PNG file (atomically).
    pub fn save(&self) -> Result<()> {
        write_png(&self.path, &self.pixels(), &[])
    }
}

impl Screen for SimScreen {
    fn describe(&self) -> String {
        let s = self.display.size();
        format!(
            "simulated {}x{} screen → {}",
            s.width,
            s.height,
            self.path.display()
        )
    }

    fn size(&self) -> Size {
        self.rotation.logical(self.display.size())
    }

    fn draw(&mut self, layout: &Layout, scene: &Scene, parts: Parts) -> Result<()> {
        let mut d = Rotated {
            inner: &mut self.display,
            rotation: self.rotation,
        };
        draw_scene(&mut d, layout, scene, parts)
            .map_err(|e| Error::display(format!("simulator: {e:?}")))?;
        if parts.last {
            self.save()?;
        }
        Ok(())
    }
}
