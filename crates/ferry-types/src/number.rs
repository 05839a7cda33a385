//! DynamoDB numbers: decimal text with up to 38 significant digits, kept exactly.

use std::cmp::Ordering;
use std::fmt;

use crate::{Error, Result};

/// Significant digits DynamoDB keeps in a number.
pub const NUMBER_DIGITS_MAX: usize = 38;
/// Largest decimal exponent DynamoDB accepts (1e125).
const EXPONENT_MAX: i32 = 126;
/// Smallest decimal exponent DynamoDB accepts (1e-130).
const EXPONENT_MIN: i32 = -129;

/// A DynamoDB number in canonical decimal text ("1.5", "-20", "0.001").
///
/// Equality, ordering and hashing are numeric: `1.50` and `1.5` are the same number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Number(String);

/// The parts of a decimal: `(-1)^negative * 0.digits * 10^exponent`. Zero has no digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decimal {
    pub negative: bool,
    /// ASCII digits without leading or trailing zeros.
    pub digits: Vec<u8>,
    pub exponent: i32,
}

impl Number {
    /// Parses decimal text (`-12.5`, `3e4`, `0.001`) into its canonical form.
    pub fn parse(text: &str) -> Result<Number> {
        let decimal = Decimal::parse(text)?;
        Ok(Number(decimal.to_text()))
    }

    /// The canonical decimal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The nearest `f64` (lossy beyond 15-17 digits).
    pub fn as_f64(&self) -> f64 {
        self.0.parse().unwrap_or(f64::NAN)
    }

    /// The value as an `i64` when it is an integer in range.
    pub fn as_i64(&self) -> Option<i64> {
        self.0.parse().ok()
    }

    /// Exact decimal sum.
    pub fn add(&self, other: &Number) -> Result<Number> {
        let sum = Decimal::add(&self.decimal(), &other.decimal());
        sum.check(&sum.to_text())?;
        Ok(Number(sum.to_text()))
    }

    /// Exact decimal difference.
    pub fn sub(&self, other: &Number) -> Result<Number> {
        let mut negated = other.decimal();
        negated.negative = !negated.negative && !negated.digits.is_empty();
        let sum = Decimal::add(&self.decimal(), &negated);
        sum.check(&sum.to_text())?;
        Ok(Number(sum.to_text()))
    }

    pub(crate) fn decimal(&self) -> Decimal {
        // The text is canonical by construction, so parsing cannot fail.
        Decimal::parse(&self.0).unwrap_or(Decimal {
            negative: false,
            digits: Vec::new(),
            exponent: 0,
        })
    }
}

impl From<i64> for Number {
    fn from(value: i64) -> Number {
        Number(value.to_string())
    }
}

impl From<u64> for Number {
    fn from(value: u64) -> Number {
        Number(value.to_string())
    }
}

impl TryFrom<f64> for Number {
    type Error = Error;
    fn try_from(value: f64) -> Result<Number> {
        if !value.is_finite() {
            return Err(Error::NotANumber(value.to_string()));
        }
        Number::parse(&value.to_string())
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "N({})", self.0)
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Number) -> Ordering {
        if self.0 == other.0 {
            return Ordering::Equal;
        }
        self.decimal().cmp_numeric(&other.decimal())
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Number) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::str::FromStr for Number {
    type Err = Error;
    fn from_str(text: &str) -> Result<Number> {
        Number::parse(text)
    }
}

impl Decimal {
    pub(crate) fn parse(text: &str) -> Result<Decimal> {
        let decimal = Decimal::parse_unchecked(text)?;
        decimal.check(text)?;
        Ok(decimal)
    }

    /// Parses without the range check (for intermediate results of arithmetic).
    fn parse_unchecked(text: &str) -> Result<Decimal> {
        let bad = || Error::NotANumber(text.to_string());
        let trimmed = text.trim();
        let (negative, rest) = match trimmed.as_bytes().first() {
            Some(b'-') => (true, &trimmed[1..]),
            Some(b'+') => (false, &trimmed[1..]),
            _ => (false, trimmed),
        };
        let (mantissa, exp_text) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let exp_value: i32 = match exp_text {
            Some(e) => e.parse().map_err(|_| bad())?,
            None => 0,
        };
        let (int_part, frac_part) = match mantissa.find('.') {
            Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
            None => (mantissa, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int_part) || !all_digits(frac_part) {
            return Err(bad());
        }
        let mut digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
        let mut exponent = int_part.len() as i32 + exp_value;
        let leading = digits.iter().take_while(|&&d| d == b'0').count();
        digits.drain(..leading);
        exponent -= leading as i32;
        while digits.last() == Some(&b'0') {
            digits.pop();
        }
        if digits.is_empty() {
            return Ok(Decimal {
                negative: false,
                digits,
                exponent: 0,
            });
        }
        Ok(Decimal {
            negative,
            digits,
            exponent,
        })
    }

    fn check(&self, text: &str) -> Result<()> {
        if self.digits.is_empty() {
            return Ok(());
        }
        if self.digits.len() > NUMBER_DIGITS_MAX
            || self.exponent > EXPONENT_MAX
            || self.exponent < EXPONENT_MIN
        {
            return Err(Error::NumberOutOfRange(text.to_string()));
        }
        Ok(())
    }

    pub(crate) fn to_text(&self) -> String {
        if self.digits.is_empty() {
            return "0".to_string();
        }
        let mut out = String::with_capacity(self.digits.len() + 4);
        if self.negative {
            out.push('-');
        }
        let len = self.digits.len() as i32;
        let digits = std::str::from_utf8(&self.digits).unwrap_or("0");
        if self.exponent <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-self.exponent) as usize));
            out.push_str(digits);
        } else if self.exponent >= len {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', (self.exponent - len) as usize));
        } else {
            let split = self.exponent as usize;
            out.push_str(&digits[..split]);
            out.push('.');
            out.push_str(&digits[split..]);
        }
        out
    }

    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        match (self.digits.is_empty(), other.digits.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        self.exponent
            .cmp(&other.exponent)
            .then_with(|| self.digits.cmp(&other.digits))
    }

    pub(crate) fn cmp_numeric(&self, other: &Decimal) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }

    /// Exact sum of two decimals, by aligning their digits on a common scale.
    fn add(a: &Decimal, b: &Decimal) -> Decimal {
        if a.digits.is_empty() {
            return b.clone();
        }
        if b.digits.is_empty() {
            return a.clone();
        }
        // Represent each as an integer of digits times 10^(exponent - len).
        let low = |d: &Decimal| d.exponent - d.digits.len() as i32;
        let scale = low(a).min(low(b));
        let widen = |d: &Decimal| -> Vec<u8> {
            let mut v: Vec<u8> = d.digits.iter().map(|c| c - b'0').collect();
            v.extend(std::iter::repeat_n(0, (low(d) - scale) as usize));
            v
        };
        let (x, y) = (widen(a), widen(b));
        let (negative, magnitude) = if a.negative == b.negative {
            (a.negative, add_digits(&x, &y))
        } else if cmp_digits(&x, &y) != Ordering::Less {
            (a.negative, sub_digits(&x, &y))
        } else {
            (b.negative, sub_digits(&y, &x))
        };
        let text: String = magnitude.iter().map(|d| char::from(b'0' + d)).collect();
        let mut out = Decimal::parse_unchecked(&format!("{text}e{scale}")).unwrap_or(Decimal {
            negative: false,
            digits: Vec::new(),
            exponent: 0,
        });
        out.negative = negative && !out.digits.is_empty();
        out
    }
}

fn cmp_digits(x: &[u8], y: &[u8]) -> Ordering {
    let strip = |v: &[u8]| v.iter().position(|&d| d != 0).map_or(0, |p| v.len() - p);
    let (lx, ly) = (strip(x), strip(y));
    lx.cmp(&ly)
        .then_with(|| x[x.len() - lx..].cmp(&y[y.len() - ly..]))
}

fn add_digits(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len().max(y.len()) + 1);
    let (mut i, mut j, mut carry) = (x.len(), y.len(), 0u8);
    while i > 0 || j > 0 || carry > 0 {
        let mut sum = carry;
        if i > 0 {
            i -= 1;
            sum += x[i];
        }
        if j > 0 {
            j -= 1;
            sum += y[j];
        }
        out.push(sum % 10);
        carry = sum / 10;
    }
    out.reverse();
    out
}

/// `x - y` where `x >= y`.
fn sub_digits(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len());
    let (mut i, mut j, mut borrow) = (x.len(), y.len(), 0i8);
    while i > 0 {
        i -= 1;
        let mut d = x[i] as i8 - borrow;
        if j > 0 {
            j -= 1;
            d -= y[j] as i8;
        }
        borrow = if d < 0 { 1 } else { 0 };
        out.push((d + 10 * borrow) as u8);
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (input, want) in [
            ("1.50", "1.5"),
            ("-0", "0"),
            ("007", "7"),
            ("1e3", "1000"),
            ("1.5e-3", "0.0015"),
            ("-12.340", "-12.34"),
            (".5", "0.5"),
            (
                "12345678901234567890123456789012345678",
                "12345678901234567890123456789012345678",
            ),
        ] {
            assert_eq!(
                Number::parse(input).map(|n| n.0),
                Ok(want.to_string()),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_bad_text_and_range() {
        for bad in ["", "-", "abc", "1.2.3", "1e", "--1", "0x10"] {
            assert!(
                matches!(Number::parse(bad), Err(Error::NotANumber(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Number::parse("123456789012345678901234567890123456789"),
            Err(Error::NumberOutOfRange(_))
        ));
        assert!(Number::parse("1e200").is_err());
    }

    #[test]
    fn numeric_order() {
        let sorted = [
            "-100", "-2.5", "-2", "-0.001", "0", "0.001", "0.5", "2", "10", "1e20",
        ];
        let numbers: Vec<Number> = sorted.iter().map(|t| Number::parse(t).unwrap()).collect();
        for pair in numbers.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
        }
    }

    #[test]
    fn exact_arithmetic() {
        let n = |t: &str| Number::parse(t).unwrap();
        assert_eq!(n("0.1").add(&n("0.2")).unwrap(), n("0.3"));
        assert_eq!(n("10").sub(&n("10.5")).unwrap(), n("-0.5"));
        assert_eq!(n("-3").add(&n("3")).unwrap(), n("0"));
        assert_eq!(
            n("99999999999999999999").add(&n("1")).unwrap(),
            n("100000000000000000000")
        );
        assert_eq!(n("-1.25").sub(&n("-0.25")).unwrap(), n("-1"));
        let big = n("9.9e125");
        assert!(
            matches!(big.add(&big), Err(Error::NumberOutOfRange(_))),
            "overflow is an error, not zero"
        );
        assert!(
            n("1e30").add(&n("1e-10")).is_err(),
            "more than 38 significant digits"
        );
    }
}
