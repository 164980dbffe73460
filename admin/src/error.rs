//! Admin errors, each with the SQLSTATE the client sees.

use pgpivot_protocol::sqlstate;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("unknown admin command {0:?}; SHOW HELP lists the valid ones")]
    Unknown(String),
    #[error("{0}")]
    BadArgument(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0} is not available on the data port; use the admin console")]
    ConsoleOnly(&'static str),
}

impl AdminError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AdminError::Unknown(_) => sqlstate::SYNTAX_ERROR,
            AdminError::BadArgument(_) => sqlstate::INVALID_PARAMETER_VALUE,
            AdminError::Refused(_) => sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            AdminError::ConsoleOnly(_) => sqlstate::INSUFFICIENT_PRIVILEGE,
        }
    }

    /// A hint listing the commands, for an unknown command.
    pub fn hint(&self) -> Option<String> {
        match self {
            AdminError::Unknown(_) => Some(format!(
                "valid commands: {}",
                crate::command::HELP
                    .iter()
                    .map(|(c, _)| *c)
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            _ => None,
        }
    }
}
