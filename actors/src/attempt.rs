//! One try at a command: refused by the domain, beaten by a concurrent writer (retry after a
//! reload), or failed in storage.

use crate::store::StoreError;
use tracing::warn;

/// How one attempt at a command ended, when it did not succeed.
#[derive(Debug)]
pub enum Attempt<E> {
    /// The domain said no; this is the answer.
    Refused(E),
    /// Another writer got there first (version check or unique key): reload and decide again.
    Conflict,
    /// Storage failed.
    Store(StoreError),
}

impl<E> From<StoreError> for Attempt<E> {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::VersionConflict | StoreError::Duplicate => Attempt::Conflict,
            other => Attempt::Store(other),
        }
    }
}

/// How many times a command is decided again after losing a race before giving up.
pub const MAX_ATTEMPTS: usize = 4;

/// Turns the last attempt's failure into the boundary error, logging storage failures.
pub fn settle<E>(kind: &str, id: &str, attempt: Attempt<E>, unavailable: E) -> E {
    match attempt {
        Attempt::Refused(error) => error,
        Attempt::Conflict => {
            warn!(kind, id, "command kept losing races; giving up");
            unavailable
        }
        Attempt::Store(error) => {
            warn!(kind, id, reason = %error, "storage failed");
            unavailable
        }
    }
}

/// Runs `$attempt` (an expression using `self`) until it is not a conflict, reloading `self`
/// between tries; evaluates to `Result<T, E>`. Written `|lookup| $attempt`, the attempt gets the
/// try's [`Lookup`](crate::store::Lookup): the first assumes what unique keys guard, the
/// others read it.
#[macro_export]
macro_rules! with_retries {
    ($self:ident, $ctx:expr, $unavailable:expr, |$lookup:ident| $attempt:expr) => {{
        let mut outcome = Err($crate::attempt::Attempt::Conflict);
        for attempt in 0..$crate::attempt::MAX_ATTEMPTS {
            let $lookup = if attempt == 0 { $crate::store::Lookup::Assume } else { $crate::store::Lookup::Read };
            outcome = $attempt.await;
            match outcome {
                Err($crate::attempt::Attempt::Conflict) => {
                    if let Err(e) = $self.reload($ctx).await {
                        outcome = Err($crate::attempt::Attempt::Store(e));
                        break;
                    }
                }
                _ => break,
            }
        }
        outcome.map_err(|a| $crate::attempt::settle(Self::KIND, $self.id.as_str(), a, $unavailable))
    }};
    ($self:ident, $ctx:expr, $unavailable:expr, $attempt:expr) => {
        $crate::with_retries!($self, $ctx, $unavailable, |_lookup| $attempt)
    };
}
