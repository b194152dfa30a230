//! Caller location: country from the number (libphonenumber), region and time zone from
//! the plan's longest matching prefix, else the country's main zone.

use chrono_tz::Tz;

use super::country_zones::COUNTRY_ZONES;
use super::plan::CompiledPlan;
use crate::domain::{Location, PhoneNumber};

/// Derives the caller's location. A withheld number gives an unknown location.
pub fn resolve_location(plan: &CompiledPlan, caller: Option<&PhoneNumber>) -> Location {
    let Some(number) = caller else {
        return Location::default();
    };
    let country = number.country().map(str::to_owned);
    let e164 = number.as_str();
    let longest = plan.longest_prefix.min(e164.len());
    let entry = (2..=longest)
        .rev()
        .find_map(|len| plan.prefixes.get(&e164[..len]));
    let region = entry.and_then(|e| e.region.clone());
    let time_zone = entry
        .and_then(|e| e.time_zone)
        .or_else(|| country.as_deref().and_then(country_main_zone));
    Location {
        country,
        region,
        time_zone,
    }
}

/// The country's main IANA zone (most populous where a country spans several).
pub fn country_main_zone(country: &str) -> Option<Tz> {
    // Parsed once: a zone name lookup is a search of chrono-tz's ~600 names.
    static ZONES: std::sync::OnceLock<Vec<Option<Tz>>> = std::sync::OnceLock::new();
    let zones = ZONES.get_or_init(|| COUNTRY_ZONES.iter().map(|(_, z)| z.parse().ok()).collect());
    COUNTRY_ZONES
        .binary_search_by(|(c, _)| (*c).cmp(country))
        .ok()
        .and_then(|i| zones.get(i).copied().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_country_zone_is_a_known_iana_zone_and_sorted() {
        for w in COUNTRY_ZONES.windows(2) {
            assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
        }
        for (c, z) in COUNTRY_ZONES {
            assert!(z.parse::<Tz>().is_ok(), "{c}: {z}");
        }
        assert_eq!(country_main_zone("GB"), Some(chrono_tz::Europe::London));
        assert_eq!(country_main_zone("US"), Some(chrono_tz::America::New_York));
        assert_eq!(country_main_zone("ZZ"), None);
    }
}
