//! The library's error type. Every variant renders as one line naming the problem; the binary
//! maps [`Error::exit_code`] to the process status (2: usage or bad input, 1: runtime failure).
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or value the user gave is invalid.
    #[error("{0}")]
    Usage(String),
    /// A file the user gave (model, image, noise) is unreadable or of the wrong kind or shape.
    #[error("{0}")]
    Input(String),
    /// A model that loaded but is not a denoiser, or that the engine rejects.
    #[error("model {path}: {message}")]
    Model { path: String, message: String },
    /// An output file could not be written.
    #[error("cannot write {path}: {message}")]
    Output { path: PathBuf, message: String },
    /// Sampling failed at run time (engine error, non-finite output).
    #[error("{0}")]
    Runtime(String),
    /// A screen could not be opened or drawn on (missing node, permission, bad wiring).
    #[error("{0}")]
    Display(String),
    /// SIGINT arrived.
    #[error("interrupted")]
    Interrupted,
    /// SIGTERM arrived.
    #[error("terminated")]
    Terminated,
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }
    pub fn input(msg: impl Into<String>) -> Error {
        Error::Input(msg.into())
    }
    pub fn runtime(msg: impl Into<String>) -> Error {
        Error::Runtime(msg.into())
    }
    pub fn display(msg: impl Into<String>) -> Error {
        Error::Display(msg.into())
    }
    pub fn model(path: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Model {
            path: path.into(),
            message: msg.into(),
        }
    }
    pub fn output(path: impl Into<PathBuf>, msg: impl ToString) -> Error {
        Error::Output {
            path: path.into(),
            message: msg.to_string(),
        }
    }

    /// 2 for problems with what the user asked or gave, 1 for failures while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_)
            | Error::Input(_)
            | Error::Model { .. }
            | Error::Output { .. }
            | Error::Display(_) => 2,
            Error::Runtime(_) => 1,
            Error::Interrupted => 130,
            Error::Terminated => 143,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Flattens an engine error chain into one line (tract's errors are `anyhow` chains).
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}
