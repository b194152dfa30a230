//! Rule index: for each structured matcher that compares one value for equality
//! (country, region, time zone, customer status, campaign, dialed number, intent), a
//! bitset of the rules that can hold for each value, plus the rules that do not list the
//! matcher at all. The candidates for a call are the AND over dimensions; only those are
//! checked further (prefixes, languages, hours, CEL), in plan order, so "first match
//! wins" is kept while a 1,000-rule plan costs a few word operations per dimension.

use super::plan::HashMap;

use super::plan::Rule;

/// A fixed-size set of rule positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    pub fn empty(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
        }
    }

    pub fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    /// Rule positions in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let tz = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + tz)
            })
        })
    }
}

#[derive(Debug)]
struct Dimension {
    /// Enabled rules that do not list this matcher.
    any: Bitset,
    /// Enabled rules that list the value.
    by_value: HashMap<String, Bitset>,
}

impl Dimension {
    fn build(
        rules: &[Rule],
        values: impl Fn(&Rule) -> Option<&std::collections::HashSet<String>>,
    ) -> Self {
        let n = rules.len();
        let mut any = Bitset::empty(n);
        let mut by_value: HashMap<String, Bitset> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            if !r.enabled {
                continue;
            }
            match values(r) {
                None => any.set(i),
                Some(vs) => {
                    for v in vs {
                        by_value
                            .entry(v.clone())
                            .or_insert_with(|| Bitset::empty(n))
                            .set(i);
                    }
                }
            }
        }
        Self { any, by_value }
    }

    fn narrow(&self, value: Option<&str>, out: &mut Bitset) {
        let listed = value.and_then(|v| self.by_value.get(v));
        match listed {
            Some(l) => {
                for ((o, a), b) in out.words.iter_mut().zip(&self.any.words).zip(&l.words) {
                    *o &= a | b;
                }
            }
            None => {
                for (o, a) in out.words.iter_mut().zip(&self.any.words) {
                    *o &= a;
                }
            }
        }
    }
}

/// The values of a call in each indexed dimension.
#[derive(Debug, Default, Clone, Copy)]
pub struct IndexKey<'a> {
    pub country: Option<&'a str>,
    pub region: Option<&'a str>,
    pub time_zone: Option<&'a str>,
    pub customer_status: Option<&'a str>,
    pub campaign: Option<&'a str>,
    pub dialed: Option<&'a str>,
    pub intent: Option<&'a str>,
}

#[derive(Debug)]
pub struct RuleIndex {
    enabled: Bitset,
    dims: [Dimension; 7],
}

impl RuleIndex {
    pub fn build(rules: &[Rule]) -> Self {
        let mut enabled = Bitset::empty(rules.len());
        for (i, r) in rules.iter().enumerate() {
            if r.enabled {
                enabled.set(i);
            }
        }
        Self {
            enabled,
            dims: [
                Dimension::build(rules, |r| r.matcher.countries.as_ref()),
                Dimension::build(rules, |r| r.matcher.regions.as_ref()),
                Dimension::build(rules, |r| r.matcher.time_zones.as_ref()),
                Dimension::build(rules, |r| r.matcher.customer_statuses.as_ref()),
                Dimension::build(rules, |r| r.matcher.campaigns.as_ref()),
                Dimension::build(rules, |r| r.matcher.dialed_numbers.as_ref()),
                Dimension::build(rules, |r| r.matcher.intents.as_ref()),
            ],
        }
    }

    /// Enabled rules whose indexed matchers all hold for `key`, in plan order.
    pub fn candidates(&self, key: &IndexKey<'_>) -> Bitset {
        let mut out = self.enabled.clone();
        let values = [
            key.country,
            key.region,
            key.time_zone,
            key.customer_status,
            key.campaign,
            key.dialed,
            key.intent,
        ];
        for (dim, value) in self.dims.iter().zip(values) {
            dim.narrow(value, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitset_iterates_in_order() {
        let mut b = Bitset::empty(200);
        for i in [0, 5, 63, 64, 130, 199] {
            b.set(i);
        }
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 5, 63, 64, 130, 199]);
    }
}
