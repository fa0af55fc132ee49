//! Errors of the ML side, each with the SQLSTATE a client sees. The crate's
//! `Error::Ml` carries these; `sqlstate()` here is the one place ML errors
//! become codes.

use crate::errors::ErrorFields;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MlError {
    /// Bad argument value: unknown algorithm, hyperparameter, task... (22023)
    #[error("{0}")]
    InvalidParameter(String),
    /// The data cannot be used as asked: NULLs with impute=error, one class... (22000)
    #[error("{0}")]
    Data(String),
    #[error("{0}")]
    UndefinedTable(String),
    #[error("{0}")]
    UndefinedColumn(String),
    /// Unknown project or model id (42704).
    #[error("{0}")]
    UndefinedObject(String),
    /// A feature of the wrong type, wrong number of features (42804).
    #[error("{0}")]
    DatatypeMismatch(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    InsufficientPrivilege(String),
    /// A training went over its memory cap (53200).
    #[error("{0}")]
    OutOfMemory(String),
    /// Too many trainings at once (53300).
    #[error("{0}")]
    TooBusy(String),
    /// ML is switched off for this pool (55000 object_not_in_prerequisite_state).
    #[error("{0}")]
    Disabled(String),
    /// A bug or an algorithm failing in a way the user cannot fix (XX000).
    #[error("{0}")]
    Internal(String),
    /// The database refused one of pgmlcat's own statements; passed through.
    #[error("{}", .0.message)]
    Server(ErrorFields),
}

impl MlError {
    pub fn sqlstate(&self) -> &str {
        match self {
            MlError::InvalidParameter(_) => "22023",
            MlError::Data(_) => "22000",
            MlError::UndefinedTable(_) => "42P01",
            MlError::UndefinedColumn(_) => "42703",
            MlError::UndefinedObject(_) => "42704",
            MlError::DatatypeMismatch(_) => "42804",
            MlError::Unsupported(_) => "0A000",
            MlError::InsufficientPrivilege(_) => "42501",
            MlError::OutOfMemory(_) => "53200",
            MlError::TooBusy(_) => "53300",
            MlError::Disabled(_) => "55000",
            MlError::Internal(_) => "XX000",
            MlError::Server(fields) => &fields.code,
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        MlError::InvalidParameter(msg.into())
    }

    pub fn data(msg: impl Into<String>) -> Self {
        MlError::Data(msg.into())
    }
}

pub type MlResult<T> = Result<T, MlError>;
