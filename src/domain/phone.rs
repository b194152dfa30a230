//! E.164 phone numbers, parsed once at the edge with the `phonenumber` crate.

use std::fmt;
use std::sync::OnceLock;

/// A phone number in E.164 form (`+` then 7 to 15 digits), with the country its calling
/// code and prefix belong to, when known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    e164: String,
    country: Option<String>,
    valid: bool,
    premium_rate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("must be E.164: '+' followed by 7 to 15 digits, e.g. +12125550100")]
    NotE164,
}

impl PhoneNumber {
    /// Parses an E.164 number. The format is checked strictly (no spaces, no national
    /// form); whether the number is allocated is recorded in [`PhoneNumber::is_valid`]
    /// rather than refused, because a real caller's number must still route.
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        let digits = input.strip_prefix('+').ok_or(PhoneError::NotE164)?;
        if !(7..=15).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(PhoneError::NotE164);
        }
        let (country, valid, premium_rate) = match phonenumber::parse(None, input) {
            Ok(n) => (
                n.country().id().map(|id| id.as_ref().to_owned()),
                n.is_valid(),
                matches!(
                    n.number_type(&phonenumber::metadata::DATABASE),
                    phonenumber::Type::PremiumRate
                ),
            ),
            Err(_) => (None, false, false),
        };
        Ok(Self {
            e164: input.to_owned(),
            country,
            valid,
            premium_rate,
        })
    }

    /// The number as `+<digits>`.
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// ISO 3166-1 alpha-2 country of the number, when the calling code and prefix say.
    pub fn country(&self) -> Option<&str> {
        self.country.as_deref()
    }

    /// Whether the number is allocated according to libphonenumber's metadata.
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// Whether the number is in a premium-rate range.
    pub fn is_premium_rate(&self) -> bool {
        self.premium_rate
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

/// Loads libphonenumber's metadata (~50 ms the first time). Called at start-up, before
/// health reports SERVING, so the first call routed does not pay for it.
pub fn warm_up() {
    static WARM: OnceLock<()> = OnceLock::new();
    WARM.get_or_init(|| {
        let _ = PhoneNumber::parse("+12125550100");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_country_from_calling_code_and_prefix() {
        assert_eq!(
            PhoneNumber::parse("+442079460958").unwrap().country(),
            Some("GB")
        );
        assert_eq!(
            PhoneNumber::parse("+12125550100").unwrap().country(),
            Some("US")
        );
        assert_eq!(
            PhoneNumber::parse("+14165550100").unwrap().country(),
            Some("CA")
        );
        assert_eq!(
            PhoneNumber::parse("+33142685300").unwrap().country(),
            Some("FR")
        );
    }

    #[test]
    fn refuses_numbers_not_in_e164_form() {
        for bad in [
            "",
            "+",
            "12125550100",
            "+1 212 555 0100",
            "+1-212-5550100",
            "+0123456789",
            "+123",
            "+1234567890123456",
            "+12125550100x",
            "tel:+12125550100",
        ] {
            assert_eq!(PhoneNumber::parse(bad), Err(PhoneError::NotE164), "{bad:?}");
        }
    }

    #[test]
    fn unallocated_numbers_parse_but_are_marked_invalid() {
        let n = PhoneNumber::parse("+999123456789").unwrap();
        assert!(!n.is_valid());
        assert_eq!(n.country(), None);
    }
}
