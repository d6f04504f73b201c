//! Parsing and formatting of the timestamps AWS puts in events.
//!
//! CloudWatch writes `2023-08-04T12:36:15.490+0000`, EventBridge `2019-10-02T17:04:40Z`,
//! SNS `2015-06-03T17:43:27.123Z`. A small parser avoids a date-time dependency in the
//! pure core; everything becomes milliseconds since the Unix epoch.

use crate::TimestampMs;

/// A timestamp that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an ISO-8601 timestamp like `2023-08-04T12:36:15.490+0000` or `2019-10-02T17:04:40Z`")]
pub struct TimestampError(pub String);

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HHMM|±HH:MM]` to epoch milliseconds.
pub fn parse_timestamp(s: &str) -> Result<TimestampMs, TimestampError> {
    let err = || TimestampError(s.to_owned());
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') || b[13] != b':' || b[16] != b':' {
        return Err(err());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, TimestampError> {
        let t = s.get(r).ok_or_else(err)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        t.parse::<i64>().map_err(|_| err())
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(err());
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        // Keep millisecond precision; extra digits are truncated, missing ones padded.
        let mut ms = String::from(&frac[..digits.min(3)]);
        while ms.len() < 3 {
            ms.push('0');
        }
        millis = ms.parse().map_err(|_| err())?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(err()),
            };
            let tz = rest[1..].replace(':', "");
            if tz.len() != 4 || !tz.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err());
            }
            let h: i64 = tz[..2].parse().map_err(|_| err())?;
            let m: i64 = tz[2..].parse().map_err(|_| err())?;
            sign * (h * 60 + m)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Ok(secs * 1000 + millis)
}

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.fffZ`.
pub fn format_timestamp(ms: TimestampMs) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", sod / 3600, (sod % 3600) / 60, sod % 60)
}

/// Days in `month` (1..=12) of `year` in the proleptic Gregorian calendar. Checking it
/// keeps an impossible date (`2026-02-31`) from silently becoming another day.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-calendar algorithms (public domain).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_aws_spelling_to_the_same_instant() {
        let a = parse_timestamp("2023-08-04T12:36:15.490+0000").expect("cloudwatch");
        let b = parse_timestamp("2023-08-04T12:36:15.490Z").expect("sns");
        let c = parse_timestamp("2023-08-04T14:36:15.490+02:00").expect("offset");
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, 1_691_152_575_490);
        assert_eq!(parse_timestamp("2019-10-02T17:04:40Z").expect("eventbridge"), 1_570_035_880_000);
    }

    #[test]
    fn rejects_garbage_naming_it() {
        for bad in ["", "yesterday", "2023-13-04T12:36:15Z", "2023-08-04T12:36:15+0", "2023-08-04T12:36:15.Z"] {
            let e = parse_timestamp(bad).expect_err(bad);
            assert!(e.to_string().contains(&format!("`{bad}`")));
        }
    }

    /// Found by the `timestamp` fuzz target: `2200-02-29` (2200 is not a leap year) was
    /// accepted as 2200-03-01, and `2026-02-31` as 2026-03-03.
    #[test]
    fn impossible_dates_are_refused_not_moved_to_another_day() {
        for bad in ["2200-02-29T00:00:00Z", "2026-02-31T10:00:00Z", "2026-02-29T10:00:00Z", "2026-04-31T10:00:00Z", "1900-02-29T00:00:00Z"]
        {
            assert_eq!(parse_timestamp(bad), Err(TimestampError(bad.into())), "{bad}");
        }
        for good in ["2000-02-29T00:00:00Z", "2024-02-29T23:59:59Z", "2026-01-31T10:00:00Z", "2026-12-31T23:59:59Z", "2026-04-30T00:00:00Z"]
        {
            let ms = parse_timestamp(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(format_timestamp(ms)[..19], good[..19]);
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [0, 1_691_152_575_490, 951_782_400_000 /* 2000-02-29 */, -86_400_000] {
            assert_eq!(parse_timestamp(&format_timestamp(ms)).expect("round trip"), ms);
        }
        assert_eq!(format_timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
