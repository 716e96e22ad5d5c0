//! Copies of an error for every caller of a failed batch: neither [`BackendError`] nor
//! [`sqlx::Error`] is `Clone`, yet each caller must get the same typed error (same variant, same
//! message, and for a database error the same SQLSTATE, so callers can still tell a deadlock
//! from a constraint error).

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

use sqlx::error::{DatabaseError, ErrorKind};

use crate::backend::BackendError;

/// The same variant with the same message.
pub(super) fn copy(error: &BackendError) -> BackendError {
    match error {
        BackendError::Sql(error) => BackendError::Sql(copy_sql(error)),
        BackendError::Timeout { backend, after } => BackendError::Timeout {
            backend,
            after: *after,
        },
        BackendError::UnexpectedReply { backend } => BackendError::UnexpectedReply { backend },
        BackendError::SqlValueOutOfRange { what, value } => BackendError::SqlValueOutOfRange {
            what,
            value: *value,
        },
        BackendError::InvalidLimit(limit) => BackendError::InvalidLimit(limit.clone()),
        BackendError::Overloaded { backend, queued } => BackendError::Overloaded {
            backend,
            queued: *queued,
        },
        // A batch produces none of the others (they come from other backends or from building).
        other => BackendError::Custom(other.to_string().into()),
    }
}

fn copy_sql(error: &sqlx::Error) -> sqlx::Error {
    use sqlx::Error as E;
    // The boxed sources carry no more than their message.
    let source = || -> Box<dyn StdError + Send + Sync> {
        StdError::source(error)
            .map_or_else(|| error.to_string(), ToString::to_string)
            .into()
    };
    match error {
        E::Configuration(_) => E::Configuration(source()),
        E::InvalidArgument(text) => E::InvalidArgument(text.clone()),
        E::Database(database) => E::Database(Box::new(CopiedDatabaseError::of(&**database))),
        E::Io(io) => E::Io(std::io::Error::new(io.kind(), io.to_string())),
        E::Tls(_) => E::Tls(source()),
        E::Protocol(text) => E::Protocol(text.clone()),
        E::RowNotFound => E::RowNotFound,
        E::TypeNotFound { type_name } => E::TypeNotFound {
            type_name: type_name.clone(),
        },
        E::ColumnIndexOutOfBounds { index, len } => E::ColumnIndexOutOfBounds {
            index: *index,
            len: *len,
        },
        E::ColumnNotFound(name) => E::ColumnNotFound(name.clone()),
        E::ColumnDecode { index, .. } => E::ColumnDecode {
            index: index.clone(),
            source: source(),
        },
        E::Encode(_) => E::Encode(source()),
        E::Decode(_) => E::Decode(source()),
        E::AnyDriverError(_) => E::AnyDriverError(source()),
        E::PoolTimedOut => E::PoolTimedOut,
        E::PoolClosed => E::PoolClosed,
        E::WorkerCrashed => E::WorkerCrashed,
        E::InvalidSavePointStatement => E::InvalidSavePointStatement,
        E::BeginFailed => E::BeginFailed,
        // Migration errors and variants added later: the message is what is left to keep.
        other => E::Protocol(other.to_string()),
    }
}

/// A database error as the server reported it, detached from the driver's type.
#[derive(Debug)]
struct CopiedDatabaseError {
    display: String,
    message: String,
    code: Option<String>,
    constraint: Option<String>,
    table: Option<String>,
    kind: ErrorKind,
}

impl CopiedDatabaseError {
    fn of(error: &dyn DatabaseError) -> Self {
        Self {
            display: error.to_string(),
            message: error.message().to_owned(),
            code: error.code().map(Cow::into_owned),
            constraint: error.constraint().map(str::to_owned),
            table: error.table().map(str::to_owned),
            kind: copy_kind(&error.kind()),
        }
    }
}

impl fmt::Display for CopiedDatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl StdError for CopiedDatabaseError {}

impl DatabaseError for CopiedDatabaseError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        self.code.as_deref().map(Cow::Borrowed)
    }

    fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
        self
    }

    fn constraint(&self) -> Option<&str> {
        self.constraint.as_deref()
    }

    fn table(&self) -> Option<&str> {
        self.table.as_deref()
    }

    fn kind(&self) -> ErrorKind {
        copy_kind(&self.kind)
    }
}

/// `ErrorKind` is not `Clone` either.
fn copy_kind(kind: &ErrorKind) -> ErrorKind {
    match kind {
        ErrorKind::UniqueViolation => ErrorKind::UniqueViolation,
        ErrorKind::ForeignKeyViolation => ErrorKind::ForeignKeyViolation,
        ErrorKind::NotNullViolation => ErrorKind::NotNullViolation,
        ErrorKind::CheckViolation => ErrorKind::CheckViolation,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_keep_the_variant_and_message() {
        let errors = [
            BackendError::Sql(sqlx::Error::PoolTimedOut),
            BackendError::Sql(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset by peer",
            ))),
            BackendError::Sql(sqlx::Error::Protocol("odd".to_owned())),
            BackendError::Timeout {
                backend: "postgres",
                after: std::time::Duration::from_secs(2),
            },
        ];
        for error in &errors {
            let copied = copy(error);
            assert_eq!(copied.to_string(), error.to_string());
            assert_eq!(
                std::mem::discriminant(&copied),
                std::mem::discriminant(error)
            );
        }
        let io = copy(&errors[1]);
        assert!(matches!(
            io,
            BackendError::Sql(sqlx::Error::Io(io)) if io.kind() == std::io::ErrorKind::ConnectionReset
        ));
    }
}
