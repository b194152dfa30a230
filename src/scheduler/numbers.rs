//! The compact form numbers take in the scheduler's index (the key of its dedupe and
//! auto-cancel lookup).

/// A phone number as the scheduler's index holds it: an E.164 number (`+` and 1 to 15
/// digits, no leading zero) packed into an integer, which is exact and allocates
/// nothing; anything else (an import may carry other text) as its text, boxed twice so
/// the enum stays 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Phone {
    E164(u64),
    #[allow(clippy::box_collection, reason = "a thin pointer keeps the enum small")]
    Other(Box<Box<str>>),
}

impl Phone {
    pub(super) fn of(s: &str) -> Self {
        match s.strip_prefix('+') {
            Some(d)
                if (1..=15).contains(&d.len())
                    && !d.starts_with('0')
                    && d.bytes().all(|b| b.is_ascii_digit()) =>
            {
                d.parse()
                    .map_or_else(|_| Phone::Other(Box::new(s.into())), Phone::E164)
            }
            _ => Phone::Other(Box::new(s.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_pack_exactly_and_other_text_stays_text() {
        assert_eq!(Phone::of("+15550100"), Phone::E164(15_550_100));
        assert_eq!(
            Phone::of("+999999999999999"),
            Phone::E164(999_999_999_999_999)
        );
        // Not E.164: kept as text, so two different texts never meet.
        for odd in [
            "15550100",
            "+015550100",
            "+1555010012345678",
            "+1-555",
            "+",
            "",
        ] {
            assert_eq!(Phone::of(odd), Phone::Other(Box::new(odd.into())), "{odd}");
        }
        assert_ne!(Phone::of("+15550100"), Phone::of("+155501000"));
    }
}
