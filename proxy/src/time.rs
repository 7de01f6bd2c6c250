//! Times as hopgate writes them: RFC 3339 UTC for people and logs (`/identity`, `/policy`,
//! audit records, log fields), whole Unix seconds for machines.

use std::time::SystemTime;

/// An RFC 3339 UTC timestamp with nanoseconds, such as `2026-12-03T06:45:01.123456789Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Whole seconds since the Unix epoch; 0 for a time before it.
pub(crate) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_are_written_as_rfc3339_utc_and_unix_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_280_301);
        assert_eq!(rfc3339(t), "2026-12-03T06:45:01Z");
        assert_eq!(unix_seconds(t), 1_796_280_301);
        assert_eq!(
            unix_seconds(SystemTime::UNIX_EPOCH - Duration::from_secs(1)),
            0
        );
    }
}
