//! Value formatting shared by the result sets: timestamps as Pgpool prints them (`%F %T`, UTC),
//! durations in milliseconds, WAL positions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DD HH:MM:SS` in UTC (the container's time zone), as Pgpool's `%F %T`.
pub fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An optional timestamp; empty (as Pgpool prints a never-happened event) when absent.
pub fn timestamp_or_empty(t: Option<SystemTime>) -> String {
    t.map(timestamp).unwrap_or_default()
}

/// Milliseconds with three decimals.
pub fn millis(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

pub fn lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_strftime() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00");
        // date -u -d @1795651200 '+%F %T'
        let t = UNIX_EPOCH + Duration::from_secs(1_795_651_200 + 3_661);
        assert_eq!(timestamp(t), "2026-11-26 01:01:01");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29 00:00:00");
        assert_eq!(timestamp_or_empty(None), "");
    }

    #[test]
    fn lsn_and_millis() {
        assert_eq!(lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(millis(Duration::from_micros(1500)), "1.500");
    }
}
