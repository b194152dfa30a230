//! E.164 phone numbers, parsed once at the edge with the `phonenumber` crate.

use std::collections::HashMap;
use std::fmt;
use std::sync::{OnceLock, RwLock};

/// A phone number in E.164 form (`+` then 7 to 15 digits), with the country its calling
/// code and prefix belong to, when known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    e164: String,
    /// A copyable code, so parsing a number allocates only its digits.
    country: Option<phonenumber::country::Id>,
}

/// Whether a number may be called back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineType {
    /// Allocated and not premium rate.
    Dialable,
    /// Not in any allocated range of its country (or no country at all).
    Unallocated,
    PremiumRate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("must be E.164: '+' followed by 7 to 15 digits, e.g. +12125550100")]
    NotE164,
}

impl PhoneNumber {
    /// Parses an E.164 number. The format is checked strictly (no spaces, no national
    /// form); whether the number is allocated is not checked here (see
    /// [`PhoneNumber::is_valid`]), because a real caller's number must still route and
    /// the check costs several microseconds of regex matching on the routing path.
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        let digits = input.strip_prefix('+').ok_or(PhoneError::NotE164)?;
        if !(7..=15).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(PhoneError::NotE164);
        }
        let country = country_of(input);
        Ok(Self {
            e164: input.to_owned(),
            country,
        })
    }

    /// The number as `+<digits>`.
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// ISO 3166-1 alpha-2 country of the number, when the calling code and prefix say.
    pub fn country(&self) -> Option<&str> {
        self.country.as_ref().map(AsRef::as_ref)
    }

    /// Whether the number is allocated according to libphonenumber's metadata.
    pub fn is_valid(&self) -> bool {
        self.line_type() != LineType::Unallocated
    }

    /// Whether the number is in a premium-rate range.
    pub fn is_premium_rate(&self) -> bool {
        self.line_type() == LineType::PremiumRate
    }

    /// What dialing the number would reach, from one parse and one match against
    /// libphonenumber's metadata (each costs microseconds of regex matching). A number
    /// whose type libphonenumber cannot tell is not allocated: that is how its
    /// `is_valid` decides too.
    pub fn line_type(&self) -> LineType {
        let Ok(n) = phonenumber::parse(None, &self.e164) else {
            return LineType::Unallocated;
        };
        match n.number_type(&phonenumber::metadata::DATABASE) {
            phonenumber::Type::Unknown => LineType::Unallocated,
            phonenumber::Type::PremiumRate => LineType::PremiumRate,
            _ => LineType::Dialable,
        }
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

/// Longest number prefix the country cache is keyed on: `+` and nine digits. Numbering
/// plans assign countries by the calling code and at most the next six digits (NANP by
/// area code, +44 by up to five digits for the Channel Islands), so every number
/// sharing this prefix belongs to the same country.
const COUNTRY_KEY_LEN: usize = 10;
/// Bound on the country cache; it starts over when full.
const COUNTRY_CACHE_MAX: usize = 65_536;

/// Country of an E.164 number. libphonenumber's answer costs several microseconds of
/// regex matching (most of a RouteCall), so it is cached per number prefix.
fn country_of(e164: &str) -> Option<phonenumber::country::Id> {
    static CACHE: OnceLock<RwLock<HashMap<String, Option<phonenumber::country::Id>>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = &e164[..e164.len().min(COUNTRY_KEY_LEN)];
    if let Some(hit) = cache.read().unwrap_or_else(|e| e.into_inner()).get(key) {
        return *hit;
    }
    let country = phonenumber::parse(None, e164)
        .ok()
        .and_then(|n| n.country().id());
    let mut w = cache.write().unwrap_or_else(|e| e.into_inner());
    if w.len() >= COUNTRY_CACHE_MAX {
        w.clear();
    }
    w.insert(key.to_owned(), country);
    country
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
    fn country_is_right_for_numbers_sharing_a_calling_code() {
        // NANP: by area code; +44: Guernsey and Jersey inside the UK code.
        for (n, c) in [
            ("+12125550100", "US"),
            ("+14165550100", "CA"),
            ("+12125550199", "US"),
            ("+18765550100", "JM"),
            ("+441481200000", "GG"),
            ("+441534500000", "JE"),
            ("+442079460000", "GB"),
            ("+77172000000", "KZ"),
            ("+74951234567", "RU"),
        ] {
            assert_eq!(PhoneNumber::parse(n).unwrap().country(), Some(c), "{n}");
            // Second time from the cache.
            assert_eq!(PhoneNumber::parse(n).unwrap().country(), Some(c), "{n}");
        }
    }

    #[test]
    fn unallocated_numbers_parse_but_are_marked_invalid() {
        let n = PhoneNumber::parse("+999123456789").unwrap();
        assert!(!n.is_valid());
        assert_eq!(n.country(), None);
    }
}
