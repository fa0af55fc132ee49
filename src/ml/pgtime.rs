//! Binary forms of the interval and timestamptz values pgmlcat answers
//! with itself (`pgml.schedule`), from their text as Postgres prints them,
//! as `interval_send` and `timestamptz_send` write them.

/// `interval_send`: microseconds (int8), days (int4), months (int4), from
/// the `postgres` IntervalStyle text (`1 year 2 mons -3 days +04:05:06.5`).
pub fn interval_binary(text: &str) -> Option<Vec<u8>> {
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0i64);
    let mut tokens = text.split_whitespace();
    while let Some(token) = tokens.next() {
        if token.contains(':') {
            micros += time_micros(token)?;
            continue;
        }
        let n: i64 = token.parse().ok()?;
        match tokens.next()?.trim_end_matches('s') {
            "year" => months += 12 * n,
            "mon" => months += n,
            "day" => days += n,
            _ => return None,
        }
    }
    let mut out = micros.to_be_bytes().to_vec();
    out.extend_from_slice(&i32::try_from(days).ok()?.to_be_bytes());
    out.extend_from_slice(&i32::try_from(months).ok()?.to_be_bytes());
    Some(out)
}

/// A binary interval (`interval_send`'s 16 bytes) as text Postgres reads
/// back exactly: `M mons D days U microseconds`.
pub fn interval_input(bytes: &[u8]) -> Option<String> {
    let micros = i64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let days = i32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
    let months = i32::from_be_bytes(
        bytes
            .get(12..16)
            .filter(|_| bytes.len() == 16)?
            .try_into()
            .ok()?,
    );
    Some(format!("{months} mons {days} days {micros} microseconds"))
}

/// `[+-]HH:MM:SS[.ffffff]` → microseconds.
fn time_micros(token: &str) -> Option<i64> {
    let (sign, rest) = match token.as_bytes().first()? {
        b'-' => (-1, &token[1..]),
        b'+' => (1, &token[1..]),
        _ => (1, token),
    };
    let mut parts = rest.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next().unwrap_or("0"));
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_micros = format!("{frac:0<6}").parse::<i64>().ok()?;
    let total = h.parse::<i64>().ok()? * 3_600_000_000
        + m.parse::<i64>().ok()? * 60_000_000
        + whole.parse::<i64>().ok()? * 1_000_000
        + frac_micros;
    Some(sign * total)
}

/// `timestamptz_send`: microseconds since 2000-01-01 00:00 UTC, from
/// `YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM]`.
pub fn timestamptz_binary(text: &str) -> Option<Vec<u8>> {
    let (date, rest) = text.trim().split_once(' ')?;
    let split = rest.rfind(['+', '-'])?;
    let (time, offset) = rest.split_at(split);
    let mut d = date.split('-');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let offset_micros = {
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let mut p = offset[1..].split(':');
        let h: i64 = p.next()?.parse().ok()?;
        let m: i64 = p.next().map_or(Some(0), |m| m.parse().ok())?;
        sign * (h * 3600 + m * 60) * 1_000_000
    };
    let days = days_from_civil(y, mo, da) - days_from_civil(2000, 1, 1);
    let micros = days * 86_400_000_000 + time_micros(time)? - offset_micros;
    Some(micros.to_be_bytes().to_vec())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's method).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(text: &str) -> (i64, i32, i32) {
        let b = interval_binary(text).unwrap();
        (
            i64::from_be_bytes(b[..8].try_into().unwrap()),
            i32::from_be_bytes(b[8..12].try_into().unwrap()),
            i32::from_be_bytes(b[12..].try_into().unwrap()),
        )
    }

    #[test]
    fn intervals_as_postgres_prints_them() {
        assert_eq!(interval("00:00:02"), (2_000_000, 0, 0));
        assert_eq!(interval("1 day 02:00:00.5"), (7_200_500_000, 1, 0));
        assert_eq!(
            interval("1 year 2 mons -3 days +04:05:06"),
            (14_706_000_000, -3, 14)
        );
        assert_eq!(interval("-00:00:01.25"), (-1_250_000, 0, 0));
        assert_eq!(interval("3 mons"), (0, 0, 3));
        assert!(interval_binary("1 fortnight").is_none());
        // A binary parameter read back as text Postgres reads exactly.
        let b = interval_binary("1 year 2 mons -3 days +04:05:06").unwrap();
        assert_eq!(
            interval_input(&b).unwrap(),
            "14 mons -3 days 14706000000 microseconds"
        );
        assert!(interval_input(&b[..15]).is_none());
    }

    #[test]
    fn timestamps_since_2000() {
        let t = |s: &str| i64::from_be_bytes(timestamptz_binary(s).unwrap().try_into().unwrap());
        assert_eq!(t("2000-01-01 00:00:00+00"), 0);
        assert_eq!(t("2000-01-02 00:00:01.5+00"), 86_401_500_000);
        assert_eq!(t("2000-01-01 02:00:00+02"), 0);
        assert_eq!(t("1999-12-31 23:00:00-01:00"), 0);
        // 2026-12-07 is 9837 days after 2000-01-01.
        assert_eq!(t("2026-12-07 00:00:00+00"), 9837 * 86_400_000_000);
    }
}
