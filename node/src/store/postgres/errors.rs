//! What Postgres said, in words, and what kind of failure it is (by SQLSTATE).

use tokio_postgres::error::SqlState;

use crate::store::{StoreError, StoreErrorKind};

/// What Postgres (or the way to it) said: the server's own message and SQLSTATE when
/// it answered ("password authentication failed for user ...", "database ... does not
/// exist"), otherwise the error with its causes ("error connecting to server:
/// Connection refused").
pub(crate) fn pg_error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// Classifies a statement's failure by SQLSTATE: what retrying can fix (connection
/// trouble, serialization failures, deadlocks, lock and statement timeouts, a server
/// shutting down or out of connections) and what it cannot.
pub(super) fn classify(e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        return StoreError::unavailable(format!("Postgres: {}", pg_error_text(&e))).with_source(e);
    };
    let code = db.code();
    let kind = if code.code().starts_with("08")
        || code.code().starts_with("53")
        || [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code)
    {
        StoreErrorKind::Transient
    } else {
        StoreErrorKind::Rejected
    };
    let message = format!("Postgres: {} (SQLSTATE {})", db.message(), code.code());
    StoreError::new(kind, message).with_source(e)
}

/// The index a unique violation (SQLSTATE 23505) was reported on.
pub(super) fn violated_unique_index(e: &StoreError) -> Option<String> {
    let source = std::error::Error::source(e)?;
    let db = source
        .downcast_ref::<tokio_postgres::Error>()?
        .as_db_error()?;
    (db.code() == &SqlState::UNIQUE_VIOLATION)
        .then(|| db.constraint().map(str::to_owned))
        .flatten()
}
