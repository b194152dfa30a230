//! E.164 phone numbers, parsed once at the edge with the `phonenumber` crate.

use std::cell::RefCell;
use std::fmt;
use std::sync::OnceLock;

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
        let country = country_of(input, digits);
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

/// Longest number prefix the country cache is keyed on: nine digits after the `+`.
/// Numbering plans assign countries by the calling code and at most the next six
/// digits (NANP by area code, +44 by up to five digits for the Channel Islands), so
/// every number sharing this prefix belongs to the same country.
const COUNTRY_KEY_DIGITS: usize = 9;
/// Bound on each thread's country cache; it starts over when full.
const COUNTRY_CACHE_MAX: usize = 65_536;

/// A number's first (up to) nine digits and their count, as one integer key.
fn country_key(digits: &str) -> u64 {
    let prefix = &digits.as_bytes()[..digits.len().min(COUNTRY_KEY_DIGITS)];
    let value = prefix
        .iter()
        .fold(0u64, |v, b| v * 10 + u64::from(b.wrapping_sub(b'0')));
    (value << 4) | prefix.len() as u64
}

/// Country of an E.164 number whose digits (after the `+`) are `digits`.
/// libphonenumber's answer costs several microseconds of regex matching (most of a
/// RouteCall), so it is cached per number prefix. Each thread keeps its own cache: a
/// shared one made every lookup write to its lock, and the two cores routing calls
/// passed that cache line back and forth on every call.
fn country_of(e164: &str, digits: &str) -> Option<phonenumber::country::Id> {
    thread_local! {
        static CACHE: RefCell<hashbrown::HashMap<u64, Option<phonenumber::country::Id>>> =
            RefCell::default();
    }
    let key = country_key(digits);
    if let Some(hit) = CACHE.with_borrow(|c| c.get(&key).copied()) {
        return hit;
    }
    let country = phonenumber::parse(None, e164)
        .ok()
        .and_then(|n| n.country().id());
    CACHE.with_borrow_mut(|c| {
        if c.len() >= COUNTRY_CACHE_MAX {
            c.clear();
        }
        c.insert(key, country);
    });
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
    fn the_country_key_is_the_first_nine_digits_and_their_count() {
        assert_eq!(country_key("12125550100"), country_key("12125550199"));
        assert_ne!(country_key("1212555"), country_key("12125550"));
        assert_ne!(country_key("44148"), country_key("441480"));
        assert_ne!(country_key("441481200"), country_key("441534500"));
        // Fifteen digits, the most E.164 has, do not overflow the key.
        assert_eq!(country_key("999999999999999"), (999_999_999 << 4) | 9);
    }

    #[test]
    fn unallocated_numbers_parse_but_are_marked_invalid() {
        let n = PhoneNumber::parse("+999123456789").unwrap();
        assert!(!n.is_valid());
        assert_eq!(n.country(), None);
    }
}
