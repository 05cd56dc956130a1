//! The XWD header of a `--display fb:FILE` screen file (Xvfb's -fbdir format): geometry, then
//! its checks, then drawing a frame (image, caption, progress bar) into the mapped file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    #[cfg(target_os = "linux")]
    {
        use edge_sample::display::fb::FbScreen;
        use edge_sample::display::layout::{Layout, Parts, Scene};
        use edge_sample::display::screen::Screen;
        use edge_sample::display::Rotation;
        use edge_sample::image::Pixels;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("screen.xwd");
        std::fs::write(&path, data).unwrap();
        if let Ok(mut screen) = FbScreen::open(&path, Rotation::R0) {
            let size = screen.size();
            let image = Pixels {
                width: 28,
                height: 28,
                channels: 1,
                data: (0..28 * 28).map(|i| i as u8).collect(),
            };
            let source = embedded_graphics::prelude::Size::new(28, 28);
            let layout = Layout::new(size, source, true, true);
            let scene = Scene {
                image: Some(&image),
                caption: Some("fuzz"),
                progress: Some(0.5),
            };
            let _ = screen.draw(&layout, &scene, Parts::ALL);
        }
    }
});
