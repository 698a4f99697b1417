//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`) parsed into an exact decimal.
//!
//! The grammar is the one documented on `k8s_openapi`'s `Quantity`: a signed decimal number
//! followed by a binary suffix (`Ki`..`Ei`), a decimal suffix (`n`, `u`, `m`, ``, `k`..`E`) or a
//! decimal exponent (`e3`, `E-2`). Values are kept exact as `mantissa * 10^exponent`, so that
//! comparisons and the kubelet's round-up conversions never lose precision.

use std::cmp::Ordering;

/// Why a quantity string could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not follow the quantity grammar.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}"
    )]
    Syntax(String),
    /// The value is too large (or has too many digits) to be represented.
    #[error("quantity {0:?} is out of range")]
    OutOfRange(String),
}

/// Result type of this module.
pub type Result<T, E = QuantityError> = std::result::Result<T, E>;

/// An exact decimal value of a quantity: `mantissa * 10^exponent`.
#[derive(Debug, Clone, Copy)]
pub struct ParsedQuantity {
    mantissa: i128,
    exponent: i32,
}

/// Most significant digits accepted; beyond this a quantity is out of range.
const MAX_DIGITS: usize = 24;
/// Largest magnitude of a decimal exponent accepted.
const MAX_EXPONENT: i32 = 40;

impl ParsedQuantity {
    /// Parses the text of a quantity.
    pub fn parse(text: &str) -> Result<Self> {
        let syntax = || QuantityError::Syntax(text.to_string());
        let range = || QuantityError::OutOfRange(text.to_string());
        let (negative, rest) = split_sign(text);
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (mut mantissa, mut exponent) = match parse_number(number) {
            Some(Some(parsed)) => parsed,
            Some(None) => return Err(range()),
            None => return Err(syntax()),
        };
        let (ten_power, binary_power) = parse_suffix(suffix).ok_or_else(syntax)?;
        exponent = exponent.checked_add(ten_power).ok_or_else(range)?;
        if exponent.abs() > MAX_EXPONENT + MAX_DIGITS as i32 {
            return Err(range());
        }
        mantissa = mantissa
            .checked_mul(1i128 << binary_power)
            .ok_or_else(range)?;
        if negative {
            mantissa = -mantissa;
        }
        Ok(Self { mantissa, exponent }.normalized())
    }

    /// Whether the value is strictly greater than zero.
    pub fn is_positive(&self) -> bool {
        self.mantissa > 0
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// The value in whole units, rounded up (the kubelet's `Quantity.Value()`).
    pub fn value_rounded_up(&self) -> Option<i64> {
        self.in_units_rounded_up(0)
    }

    /// The value in thousandths, rounded up (the kubelet's `Quantity.MilliValue()`).
    pub fn milli_value_rounded_up(&self) -> Option<i64> {
        self.in_units_rounded_up(-3)
    }

    /// The value expressed in units of `10^unit_exponent`, rounded towards positive infinity.
    fn in_units_rounded_up(&self, unit_exponent: i32) -> Option<i64> {
        let shift = self.exponent - unit_exponent;
        let scaled = if shift >= 0 {
            self.mantissa.checked_mul(pow10(shift)?)?
        } else {
            match pow10(-shift) {
                Some(unit) => div_ceil(self.mantissa, unit),
                // Finer than 10^38 units: below one unit in size, so rounded up it is 1 if
                // positive and 0 if not.
                None => i128::from(self.mantissa > 0),
            }
        };
        i64::try_from(scaled).ok()
    }

    /// Removes trailing zeros from the mantissa so that equal values compare cheaply.
    fn normalized(mut self) -> Self {
        if self.mantissa == 0 {
            return Self {
                mantissa: 0,
                exponent: 0,
            };
        }
        while self.mantissa % 10 == 0 {
            self.mantissa /= 10;
            self.exponent += 1;
        }
        self
    }

    /// Both values over a common exponent, or `None` when that would overflow.
    fn aligned(&self, other: &Self) -> Option<(i128, i128)> {
        let exponent = self.exponent.min(other.exponent);
        let left = self
            .mantissa
            .checked_mul(pow10(self.exponent - exponent)?)?;
        let right = other
            .mantissa
            .checked_mul(pow10(other.exponent - exponent)?)?;
        Some((left, right))
    }

    /// The sum of two quantities, or `None` on overflow.
    pub fn checked_add(&self, other: &Self) -> Option<Self> {
        if other.mantissa == 0 {
            return Some(self.normalized());
        }
        if self.mantissa == 0 {
            return Some(other.normalized());
        }
        let (left, right) = self.aligned(other)?;
        let exponent = self.exponent.min(other.exponent);
        Some(
            Self {
                mantissa: left.checked_add(right)?,
                exponent,
            }
            .normalized(),
        )
    }
}

impl PartialEq for ParsedQuantity {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ParsedQuantity {}

impl PartialOrd for ParsedQuantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ParsedQuantity {
    fn cmp(&self, other: &Self) -> Ordering {
        match self.aligned(other) {
            Some((left, right)) => left.cmp(&right),
            // Alignment overflows only when exponents differ wildly: the signs decide, then
            // the larger exponent carries the larger magnitude.
            None => self
                .mantissa
                .signum()
                .cmp(&other.mantissa.signum())
                .then_with(|| {
                    let by_exponent = self.exponent.cmp(&other.exponent);
                    if self.mantissa < 0 {
                        by_exponent.reverse()
                    } else {
                        by_exponent
                    }
                }),
        }
    }
}

/// Parses the text of a quantity (shorthand for [`ParsedQuantity::parse`]).
pub fn parse_quantity(text: &str) -> Result<ParsedQuantity> {
    ParsedQuantity::parse(text)
}

fn split_sign(text: &str) -> (bool, &str) {
    if let Some(rest) = text.strip_prefix('-') {
        (true, rest)
    } else {
        (false, text.strip_prefix('+').unwrap_or(text))
    }
}

/// `digits`, `digits.digits`, `digits.` or `.digits` as (mantissa, exponent); `None` when it
/// is not a number, `Some(None)` when it has more than [`MAX_DIGITS`] significant digits.
fn parse_number(number: &str) -> Option<Option<(i128, i32)>> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let significant = digits.trim_start_matches('0');
    if significant.len() > MAX_DIGITS {
        return Some(None);
    }
    let mantissa = if significant.is_empty() {
        0
    } else {
        significant.parse::<i128>().ok()?
    };
    Some(Some((mantissa, -(fraction.len() as i32))))
}

/// A suffix as (power of ten, power of two).
fn parse_suffix(suffix: &str) -> Option<(i32, u32)> {
    let decimal = match suffix {
        "" => Some(0),
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(power) = decimal {
        return Some((power, 0));
    }
    let binary = match suffix {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(power) = binary {
        return Some((0, power));
    }
    parse_exponent(suffix).map(|power| (power, 0))
}

/// `e<signed integer>` or `E<signed integer>`.
fn parse_exponent(suffix: &str) -> Option<i32> {
    let rest = suffix.strip_prefix(['e', 'E'])?;
    let (negative, digits) = split_sign(rest);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude: i32 = digits.parse().ok()?;
    if magnitude > MAX_EXPONENT {
        return None;
    }
    Some(if negative { -magnitude } else { magnitude })
}

fn pow10(power: i32) -> Option<i128> {
    10i128.checked_pow(u32::try_from(power).ok()?)
}

fn div_ceil(value: i128, divisor: i128) -> i128 {
    let quotient = value / divisor;
    if value % divisor > 0 {
        quotient + 1
    } else {
        quotient
    }
}

/// `ceil(numerator / denominator)` of two quantities as a whole number, the kubelet's rule for
/// a resource divided by a `resourceFieldRef` divisor. `None` if the divisor is not positive.
pub fn divide_rounded_up(numerator: i64, denominator: i64) -> Option<i64> {
    if denominator <= 0 {
        return None;
    }
    Some(div_ceil(i128::from(numerator), i128::from(denominator)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_converts_like_the_kubelet() {
        // (text, Value() rounded up, MilliValue() rounded up)
        let cases: &[(&str, Option<i64>, Option<i64>)] = &[
            ("0", Some(0), Some(0)),
            ("1", Some(1), Some(1000)),
            ("+1", Some(1), Some(1000)),
            ("-1", Some(-1), Some(-1000)),
            ("100m", Some(1), Some(100)),
            ("1500m", Some(2), Some(1500)),
            ("1.5", Some(2), Some(1500)),
            (".5", Some(1), Some(500)),
            ("5.", Some(5), Some(5000)),
            ("0.1", Some(1), Some(100)),
            ("1n", Some(1), Some(1)),
            ("1u", Some(1), Some(1)),
            ("250u", Some(1), Some(1)),
            ("-1500m", Some(-1), Some(-1500)),
            ("1k", Some(1000), Some(1_000_000)),
            ("1M", Some(1_000_000), Some(1_000_000_000)),
            ("1G", Some(1_000_000_000), Some(1_000_000_000_000)),
            ("1Ki", Some(1024), Some(1_024_000)),
            ("1Mi", Some(1_048_576), Some(1_048_576_000)),
            ("1.5Gi", Some(1_610_612_736), Some(1_610_612_736_000)),
            ("128Mi", Some(134_217_728), Some(134_217_728_000)),
            ("1e3", Some(1000), Some(1_000_000)),
            ("1E3", Some(1000), Some(1_000_000)),
            ("1e-3", Some(1), Some(1)),
            ("5e+2", Some(500), Some(500_000)),
            ("2E", Some(2_000_000_000_000_000_000), None),
            ("8Ei", None, None),
            ("0.000", Some(0), Some(0)),
            ("007", Some(7), Some(7000)),
        ];
        for (text, value, milli) in cases {
            let quantity = parse_quantity(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(quantity.value_rounded_up(), *value, "{text}");
            assert_eq!(quantity.milli_value_rounded_up(), *milli, "milli {text}");
        }
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "", "m", "1.2.3", "1x", "1 Mi", " 1", "1ki", "1e", "1e+", "--1", "1Mi2", ".", "1e99",
            "abc",
        ] {
            assert!(parse_quantity(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn rejects_out_of_range_text() {
        for text in [
            "1234567890123456789012345678901234567890",
            "0.0000012345678901234567890123456789",
        ] {
            assert!(
                matches!(parse_quantity(text), Err(QuantityError::OutOfRange(_))),
                "{text:?} has more significant digits than a quantity holds"
            );
        }
    }

    #[test]
    fn compares_values_across_suffixes() {
        let cases: &[(&str, &str, Ordering)] = &[
            ("1", "1000m", Ordering::Equal),
            ("1k", "1e3", Ordering::Equal),
            ("1Ki", "1k", Ordering::Greater),
            ("0.5", "500m", Ordering::Equal),
            ("-1", "0", Ordering::Less),
            ("1Gi", "1073741824", Ordering::Equal),
            ("100m", "0.2", Ordering::Less),
            ("1e-9", "1n", Ordering::Equal),
        ];
        for (left, right, expected) in cases {
            let left_q = parse_quantity(left).unwrap();
            let right_q = parse_quantity(right).unwrap();
            assert_eq!(left_q.cmp(&right_q), *expected, "{left} vs {right}");
        }
    }

    #[test]
    fn adds_values() {
        let sum = parse_quantity("500m")
            .unwrap()
            .checked_add(&parse_quantity("1.5").unwrap())
            .unwrap();
        assert_eq!(sum, parse_quantity("2").unwrap());
    }

    #[test]
    fn divides_rounding_up() {
        let cases = [
            (1000, 1, Some(1000)),
            (1001, 1000, Some(2)),
            (0, 5, Some(0)),
            (7, 0, None),
            (2000, 1000, Some(2)),
        ];
        for (numerator, denominator, expected) in cases {
            assert_eq!(divide_rounded_up(numerator, denominator), expected);
        }
    }

    #[test]
    fn sign_and_zero_helpers() {
        assert!(parse_quantity("1m").unwrap().is_positive());
        assert!(!parse_quantity("-1m").unwrap().is_positive());
        assert!(parse_quantity("0Gi").unwrap().is_zero());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Decimal suffixes as (text, power of ten) and binary ones as (text, power of two).
    const DECIMAL: &[(&str, i32)] = &[
        ("n", -9),
        ("u", -6),
        ("m", -3),
        ("", 0),
        ("k", 3),
        ("M", 6),
        ("G", 9),
        ("T", 12),
        ("P", 15),
        ("E", 18),
    ];
    const BINARY: &[(&str, u32)] = &[
        ("Ki", 10),
        ("Mi", 20),
        ("Gi", 30),
        ("Ti", 40),
        ("Pi", 50),
        ("Ei", 60),
    ];

    /// A suffix of the grammar, with exponents down to `-lowest`: its text, power of ten
    /// and power of two.
    fn suffix(lowest: i32) -> impl Strategy<Value = (String, i32, u32)> {
        prop_oneof![
            prop::sample::select(DECIMAL).prop_map(|(s, p)| (s.to_string(), p, 0)),
            prop::sample::select(BINARY).prop_map(|(s, p)| (s.to_string(), 0, p)),
            (
                prop::sample::select(&["e", "E"][..]),
                prop::sample::select(&["", "+", "-"][..]),
                0i32..=MAX_EXPONENT,
            )
                .prop_filter("below the lowest exponent", move |(_, sign, power)| {
                    *sign != "-" || *power <= lowest
                })
                .prop_map(|(e, sign, power)| {
                    let value = if sign == "-" { -power } else { power };
                    (format!("{e}{sign}{power}"), value, 0)
                }),
        ]
    }

    /// An exact value as sign, decimal digits (no leading zeros; empty for zero) and the
    /// power of ten they are scaled by, computed from the parts of the text without the
    /// parser.
    #[derive(Debug, Clone)]
    struct Exact {
        negative: bool,
        digits: String,
        exponent: i32,
    }

    impl Exact {
        /// The value rounded up in units of `10^unit`, if it fits an i64 (string arithmetic,
        /// so no power of ten can overflow).
        fn rounded_up(&self, unit: i32) -> Option<i64> {
            if self.digits.is_empty() {
                return Some(0);
            }
            let shift = self.exponent - unit;
            let (whole, inexact) = if shift >= 0 {
                (
                    format!("{}{}", self.digits, "0".repeat(shift as usize)),
                    false,
                )
            } else {
                let cut = self.digits.len().saturating_sub((-shift) as usize);
                let (whole, fraction) = self.digits.split_at(cut);
                (whole.to_string(), fraction.bytes().any(|b| b != b'0'))
            };
            let whole = if whole.is_empty() { "0" } else { &whole };
            // More than 20 digits cannot fit an i64 either way.
            if whole.len() > 20 {
                return None;
            }
            let whole: i128 = whole.parse().unwrap();
            let value = match (self.negative, inexact) {
                (false, true) => whole + 1,
                (false, false) => whole,
                (true, _) => -whole,
            };
            i64::try_from(value).ok()
        }

        /// The exact order of two values, by sign, then magnitude.
        fn cmp(&self, other: &Self) -> Ordering {
            let sign = |e: &Self| match (e.digits.is_empty(), e.negative) {
                (true, _) => 0,
                (false, false) => 1,
                (false, true) => -1,
            };
            let by_sign = sign(self).cmp(&sign(other));
            if by_sign != Ordering::Equal || sign(self) == 0 {
                return by_sign;
            }
            // Magnitude: the position of the leading digit, then the digits themselves.
            let top = |e: &Self| e.digits.len() as i64 + i64::from(e.exponent);
            let trimmed = |e: &Self| e.digits.trim_end_matches('0').to_string();
            let magnitude = top(self)
                .cmp(&top(other))
                .then_with(|| trimmed(self).cmp(&trimmed(other)));
            if self.negative {
                magnitude.reverse()
            } else {
                magnitude
            }
        }
    }

    /// Text that follows the grammar (at most 24 digits, as the parser allows; decimal
    /// exponents down to `-lowest`) with its exact value; the value is `None` when the
    /// binary suffix makes the mantissa too large for an i128, where the parser reports
    /// `OutOfRange`.
    fn grammatical(lowest: i32) -> impl Strategy<Value = (String, Option<Exact>)> {
        (
            prop::sample::select(&["", "+", "-"][..]),
            "[0-9]{0,12}",
            proptest::option::of("[0-9]{0,12}"),
            suffix(lowest),
        )
            .prop_filter("a number needs a digit", |(_, whole, fraction, _)| {
                !whole.is_empty() || fraction.as_ref().is_some_and(|f| !f.is_empty())
            })
            .prop_map(|(sign, whole, fraction, (suffix, ten, two))| {
                let text = match &fraction {
                    Some(f) => format!("{sign}{whole}.{f}{suffix}"),
                    None => format!("{sign}{whole}{suffix}"),
                };
                let fraction = fraction.unwrap_or_default();
                let mantissa: i128 = format!("0{whole}{fraction}").parse().unwrap();
                let exact = mantissa.checked_mul(1i128 << two).map(|m| Exact {
                    negative: sign == "-",
                    digits: if m == 0 { String::new() } else { m.to_string() },
                    exponent: ten - fraction.len() as i32,
                });
                (text, exact)
            })
    }

    /// An integer with one of the common suffixes, and its exact value in thousandths.
    fn common() -> impl Strategy<Value = (String, i128)> {
        const SUFFIXES: &[(&str, i128)] = &[
            ("m", 1),
            ("", 1_000),
            ("k", 1_000_000),
            ("M", 1_000_000_000),
            ("G", 1_000_000_000_000),
            ("Ki", 1_024_000),
            ("Mi", 1_048_576_000),
            ("Gi", 1_073_741_824_000),
        ];
        let mantissa = prop_oneof![
            -2000i64..2000,
            any::<i64>(),
            // Around the largest value that still fits in thousandths or in units.
            (-3i64..3).prop_map(|d| i64::MAX / 1000 + d),
            (-3i64..3).prop_map(|d| i64::MAX / 1_073_741_824 + d),
        ];
        (mantissa, prop::sample::select(SUFFIXES))
            .prop_map(|(m, (suffix, milli))| (format!("{m}{suffix}"), i128::from(m) * milli))
    }

    fn parsed(text: &str) -> ParsedQuantity {
        parse_quantity(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    /// The checks that hold for every accepted quantity, whatever its text.
    fn check_accepted(q: &ParsedQuantity) -> Result<(), TestCaseError> {
        let zero = parsed("0");
        prop_assert_eq!(q.cmp(q), Ordering::Equal);
        prop_assert_eq!(q.is_zero(), *q == zero);
        prop_assert_eq!(q.is_positive(), *q > zero);
        let (value, milli) = (q.value_rounded_up(), q.milli_value_rounded_up());
        if let Some(v) = value {
            if q.is_zero() {
                prop_assert_eq!(v, 0);
            } else if q.is_positive() {
                prop_assert!(v >= 1, "{:?} rounds up to {}", q, v);
            } else {
                prop_assert!(v <= 0, "{:?} rounds up to {}", q, v);
            }
        }
        if let (Some(v), Some(m)) = (value, milli) {
            // ceil(1000 x) lies in (1000 (ceil(x) - 1), 1000 ceil(x)].
            let (v, m) = (i128::from(v), i128::from(m));
            prop_assert!(1000 * (v - 1) < m && m <= 1000 * v, "{} vs {}", v, m);
        }
        Ok(())
    }

    proptest! {
        /// Arbitrary text never panics, and whatever is accepted behaves like a number.
        #[test]
        fn parse_properties_never_panic_on_arbitrary_text(text in any::<String>()) {
            if let Ok(q) = parse_quantity(&text) {
                check_accepted(&q)?;
            }
        }

        /// Text made of the grammar's characters never panics, and whatever is accepted
        /// behaves like a number.
        #[test]
        fn parse_properties_never_panic_on_quantity_like_text(
            text in "[-+]?[0-9.]{0,30}[eEinumkKMGTP]{0,2}[-+]?[0-9]{0,4}",
        ) {
            if let Ok(q) = parse_quantity(&text) {
                check_accepted(&q)?;
            }
        }

        /// An integer with a common suffix converts exactly as i128 arithmetic says
        /// (rounded up), or to None when that does not fit an i64.
        #[test]
        fn rounding_properties_of_common_suffixes((text, milli) in common()) {
            let q = parsed(&text);
            let value = milli.div_euclid(1000) + i128::from(milli.rem_euclid(1000) != 0);
            prop_assert_eq!(q.value_rounded_up(), i64::try_from(value).ok(), "{}", text);
            prop_assert_eq!(q.milli_value_rounded_up(), i64::try_from(milli).ok(), "{}", text);
            prop_assert_eq!(q.is_zero(), milli == 0);
            prop_assert_eq!(q.is_positive(), milli > 0);
            check_accepted(&q)?;
        }

        /// `checked_add` is commutative and agrees with the exact sum, and ordering, zero
        /// and sign agree with the exact values.
        #[test]
        fn arithmetic_properties_of_common_suffixes(
            (left_text, left) in common(),
            (right_text, right) in common(),
        ) {
            let (l, r) = (parsed(&left_text), parsed(&right_text));
            prop_assert_eq!(l.cmp(&r), left.cmp(&right), "{} vs {}", left_text, right_text);
            prop_assert_eq!(r.cmp(&l), right.cmp(&left));
            prop_assert_eq!(l == r, left == right);
            let sum = l.checked_add(&r);
            prop_assert_eq!(sum, r.checked_add(&l));
            let sum = sum.expect("small mantissas never overflow");
            prop_assert_eq!(sum.milli_value_rounded_up(), i64::try_from(left + right).ok());
            prop_assert_eq!(sum.is_zero(), left + right == 0);
            prop_assert_eq!(sum.is_positive(), left + right > 0);
            prop_assert_eq!(sum.cmp(&l), right.cmp(&0));
            prop_assert_eq!(l.checked_add(&parsed("0")), Some(l));
        }

        /// Every text of the grammar (sign, fraction, any suffix or exponent) is accepted
        /// unless its binary mantissa is out of range, and converts to its exact value
        /// rounded up (`1e-39` rounds up to 1).
        #[test]
        fn rounding_properties_of_the_whole_grammar((text, exact) in grammatical(MAX_EXPONENT)) {
            match (parse_quantity(&text), exact) {
                (Ok(q), Some(exact)) => {
                    prop_assert_eq!(q.value_rounded_up(), exact.rounded_up(0), "{}", text);
                    let milli = q.milli_value_rounded_up();
                    prop_assert_eq!(milli, exact.rounded_up(-3), "milli {}", text);
                    check_accepted(&q)?;
                }
                (Err(QuantityError::OutOfRange(_)), None) => {}
                (other, exact) => prop_assert!(false, "{:?}: {:?} for {:?}", text, other, exact),
            }
        }

        /// Ordering agrees with the exact values across the whole grammar, including values
        /// whose exponents are too far apart to align, and `checked_add` is commutative.
        #[test]
        fn ordering_properties_of_the_whole_grammar(
            (left_text, left) in grammatical(MAX_EXPONENT),
            (right_text, right) in grammatical(MAX_EXPONENT),
        ) {
            let (Some(left), Some(right)) = (left, right) else {
                return Ok(());
            };
            let (l, r) = (parsed(&left_text), parsed(&right_text));
            prop_assert_eq!(l.cmp(&r), left.cmp(&right), "{} vs {}", left_text, right_text);
            prop_assert_eq!(r.cmp(&l), right.cmp(&left), "{} vs {}", right_text, left_text);
            prop_assert_eq!(l.checked_add(&r), r.checked_add(&l));
            prop_assert_eq!(l.checked_add(&parsed("0")), Some(l));
        }
    }
}
