//! Timestamps as stored: TEXT in a fixed-width UTC form on both backends.
//!
//! The `Any` driver carries no date type, and a fixed width (nanoseconds always written, `Z`
//! always the zone) makes text order the same as time order, which `created_at < cutoff` relies
//! on. Nanoseconds keep a reloaded value equal to the one the entity held in memory.

use super::StoreError;
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

/// The stored form of `at`.
pub fn encode(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// Reads a stored timestamp; any RFC 3339 form is accepted, so rows written before this format
/// (sqlx's own, with `+00:00` and a varying fraction) still load.
pub fn decode(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {text:?}: {e}")))
}

/// Reads the timestamp in `column` of `row`.
pub fn column(row: &AnyRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    decode(&row.try_get::<String, _>(column)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn text_order_is_time_order_and_values_survive_the_round_trip() {
        let early = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let later = early + chrono::Duration::nanoseconds(1_500);
        assert!(encode(early) < encode(later));
        assert_eq!(encode(early).len(), encode(later).len());
        assert_eq!(decode(&encode(later)).unwrap(), later);
        assert_eq!(decode("2024-05-01T12:00:00.5+00:00").unwrap(), early + chrono::Duration::milliseconds(500));
    }
}
