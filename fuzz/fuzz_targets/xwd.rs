//! The XWD header of a `--display fb:FILE` screen file (Xvfb's -fbdir format): geometry, then
//! its checks, then drawing a frame into a buffer of the file's size.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    #[cfg(target_os = "linux")]
    {
        use edge_sample::display::fb::FbScreen;
        use edge_sample::display::Rotation;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("screen.xwd");
        std::fs::write(&path, data).unwrap();
        if let Ok(mut screen) = FbScreen::open(&path, Rotation::R0) {
            let _ = screen.geometry();
            use edge_sample::display::screen::Screen;
            let _ = screen.size();
        }
    }
});
