//! What loading wants the operator to know (ignored variables, settings without effect), kept as
//! data: the configuration is read before logging starts, since the log filter is a setting, so
//! the binary logs these once its subscriber exists, and RELOAD logs them as it reads.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub level: Level,
    /// Never holds a secret's value.
    pub message: String,
}

impl Notice {
    pub fn new(level: Level, message: impl Into<String>) -> Self {
        Notice {
            level,
            message: message.into(),
        }
    }

    pub fn emit(&self) {
        let message = &self.message;
        match self.level {
            Level::Debug => tracing::debug!(target: "pgpivot::config", "{message}"),
            Level::Info => tracing::info!(target: "pgpivot::config", "{message}"),
            Level::Warn => tracing::warn!(target: "pgpivot::config", "{message}"),
        }
    }
}
