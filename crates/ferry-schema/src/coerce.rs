//! Type coercion of user JSON into stored values, and ISO-8601 dates.

use std::collections::BTreeSet;

use ferry_types::{Number, Value};
use serde_json::Value as Json;

use crate::{Field, FieldType};

/// Converts one JSON value to the stored form of `field`'s type (nested schemas aside).
/// The error is the reason, in words a user can act on.
pub(crate) fn coerce(field: &Field, json: &Json) -> Result<Value, String> {
    match field.ty {
        FieldType::String => match json {
            Json::String(s) => Ok(Value::S(s.clone())),
            Json::Number(n) => Ok(Value::S(n.to_string())),
            Json::Bool(b) => Ok(Value::S(b.to_string())),
            _ => Err(expected("text", json)),
        },
        FieldType::Number => number(json).map(Value::N),
        FieldType::Boolean => boolean(json).map(Value::Bool),
        FieldType::Date => date(field, json),
        FieldType::Object => match json {
            Json::Object(_) => Value::from_json(json).map_err(|e| e.to_string()),
            _ => Err(expected("an object", json)),
        },
        FieldType::Array => match json {
            Json::Array(_) => Value::from_json(json).map_err(|e| e.to_string()),
            _ => Err(expected("an array", json)),
        },
        FieldType::Binary => json
            .as_str()
            .and_then(ferry_types::json::decode_base64)
            .map(Value::B)
            .ok_or_else(|| expected("base64 text", json)),
        FieldType::Set => set(json),
    }
}

fn expected(what: &str, json: &Json) -> String {
    format!("expected {what}, got {json}")
}

fn number(json: &Json) -> Result<Number, String> {
    // An integer's decimal text is already the canonical form `Number::parse` gives.
    if let Some(n) = json.as_i64() {
        return Ok(Number::from(n));
    }
    if let Some(n) = json.as_u64() {
        return Ok(Number::from(n));
    }
    let text = match json {
        Json::Number(n) => n.to_string(),
        Json::String(s) => s.trim().to_string(),
        _ => return Err(expected("a number or numeric text", json)),
    };
    Number::parse(&text).map_err(|e| e.to_string())
}

fn boolean(json: &Json) -> Result<bool, String> {
    match json {
        Json::Bool(b) => Ok(*b),
        Json::String(s) if s == "true" || s == "1" => Ok(true),
        Json::String(s) if s == "false" || s == "0" => Ok(false),
        _ => Err(expected(
            "true, false, \"true\", \"false\", \"1\" or \"0\"",
            json,
        )),
    }
}

/// Dates are stored as epoch milliseconds, ISO text with `isoDates`, epoch seconds for ttl.
fn date(field: &Field, json: &Json) -> Result<Value, String> {
    let ms = match json {
        Json::String(text) => parse_iso(text).ok_or_else(|| {
            format!("'{text}' is not a date: use ISO-8601 such as 2024-05-01T12:00:00Z or epoch milliseconds")
        })?,
        Json::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| expected("epoch milliseconds", json))?,
        _ => return Err(expected("ISO-8601 text or epoch milliseconds", json)),
    };
    Ok(if field.ttl {
        Value::int(ms.div_euclid(1000))
    } else if field.iso_dates {
        Value::S(format_iso(ms))
    } else {
        Value::int(ms)
    })
}

fn set(json: &Json) -> Result<Value, String> {
    let Json::Array(list) = json else {
        return Err(expected("an array of texts or of numbers", json));
    };
    if list.iter().all(Json::is_string) {
        let texts = list.iter().filter_map(Json::as_str).map(str::to_string);
        return Ok(Value::Ss(texts.collect()));
    }
    if list.iter().all(Json::is_number) {
        let numbers: Result<BTreeSet<Number>, String> = list.iter().map(number).collect();
        return numbers.map(Value::Ns);
    }
    Err(expected("an array of only texts or only numbers", json))
}

/// Parses `YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|±HH:MM]` to epoch milliseconds (UTC when no zone).
pub(crate) fn parse_iso(text: &str) -> Option<i64> {
    let (date, time) = match text.find(['T', 't', ' ']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let mut ymd = date.splitn(3, '-');
    let year: i64 = digits(ymd.next()?, 4)?;
    let month: i64 = digits(ymd.next()?, 2)?;
    let day: i64 = digits(ymd.next()?, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let day_ms = days_from_civil(year, month, day) * 86_400_000;
    Some(day_ms + time.map_or(Some(0), parse_time)?)
}

/// `HH:MM[:SS[.fff]][Z|±HH:MM]` to milliseconds after midnight UTC.
fn parse_time(text: &str) -> Option<i64> {
    let (clock, offset_ms) = match text.find(['Z', 'z', '+', '-']) {
        Some(at) => (&text[..at], parse_offset(&text[at..])?),
        None => (text, 0),
    };
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, fraction)) => (hms, Some(fraction)),
        None => (clock, None),
    };
    let mut parts = hms.split(':');
    let hour = digits(parts.next()?, 2)?;
    let minute = digits(parts.next()?, 2)?;
    let second = parts.next().map_or(Some(0), |s| digits(s, 2))?;
    if parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let millis = match fraction {
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{f:0<3}")[..3].parse::<i64>().ok()?
        }
        Some(_) => return None,
        None => 0,
    };
    Some(((hour * 60 + minute) * 60 + second) * 1000 + millis - offset_ms)
}

fn parse_offset(text: &str) -> Option<i64> {
    if text.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let sign = if text.starts_with('-') { -1 } else { 1 };
    let (hours, minutes) = text[1..].split_once(':')?;
    Some(sign * (digits(hours, 2)? * 60 + digits(minutes, 2)?) * 60_000)
}

fn digits(text: &str, len: usize) -> Option<i64> {
    if text.len() != len || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Formats epoch milliseconds as JavaScript's `toISOString` does: `2024-05-01T12:00:00.000Z`.
pub(crate) fn format_iso(ms: i64) -> String {
    let (days, day_ms) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (secs, millis) = (day_ms / 1000, day_ms % 1000);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms for the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, want: Option<i64>) {
        assert_eq!(parse_iso(text), want, "{text}");
    }

    #[test]
    fn an_integer_coerces_to_what_its_text_parses_to() {
        let texts = [
            "0",
            "1",
            "-1",
            "7",
            "100",
            "-1000000",
            "1000000000000000000",
        ];
        let extremes = [
            i64::MIN.to_string(),
            i64::MAX.to_string(),
            u64::MAX.to_string(),
        ];
        for text in texts.into_iter().chain(extremes.iter().map(String::as_str)) {
            let json: Json = serde_json::from_str(text).unwrap();
            let parsed = Number::parse(text).unwrap();
            assert_eq!(number(&json).unwrap(), parsed, "{text}");
            assert_eq!(number(&json).unwrap().as_str(), parsed.as_str(), "{text}");
        }
        // What is not an integer's plain text goes the way it went.
        for (text, canonical) in [("-0", "0"), ("1.0", "1"), ("1e2", "100"), ("-1.50", "-1.5")] {
            let json: Json = serde_json::from_str(text).unwrap();
            assert_eq!(number(&json).unwrap().as_str(), canonical, "{text}");
        }
    }

    #[test]
    fn parses_iso_dates() {
        check("1970-01-01", Some(0));
        check("2024-05-01T12:00:00Z", Some(1_714_564_800_000));
        check("2024-05-01T12:00Z", Some(1_714_564_800_000));
        check("2024-05-01T12:00:00.5Z", Some(1_714_564_800_500));
        check("2024-05-01T12:00:00.123456Z", Some(1_714_564_800_123));
        check("2024-05-01T14:00:00+02:00", Some(1_714_564_800_000));
        check("2024-05-01T10:30:00-01:30", Some(1_714_564_800_000));
        check("2024-02-29", Some(1_709_164_800_000));
        check("1969-12-31T23:59:59.999Z", Some(-1));
        for bad in [
            "",
            "2024",
            "2024-13-01",
            "2023-02-29",
            "2024-05-01T25:00",
            "2024-05-01T12",
            "24-05-01",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00+2",
        ] {
            check(bad, None);
        }
    }

    #[test]
    fn formats_like_javascript() {
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_714_564_800_123, "2024-05-01T12:00:00.123Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        ] {
            assert_eq!(format_iso(ms), text);
            assert_eq!(parse_iso(text), Some(ms));
        }
    }
}
