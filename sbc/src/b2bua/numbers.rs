//! Number normalisation between a national carrier trunk and Teams, which
//! expects E.164 with a leading `+` (behaviour §3.1; a number that is not
//! E.164 gets 404 from the hub).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadNumber(pub String);

impl fmt::Display for BadNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a dialable number", self.0)
    }
}

/// National or international digits to E.164: `030123456` → `+4930123456`,
/// `0041…` → `+41…`, `+…` kept. Visual separators (RFC 3966 §5.1.1) are dropped.
pub fn to_e164(number: &str, country_code: &str) -> Result<String, BadNumber> {
    let digits: String = number.chars().filter(|c| !"-.() ".contains(*c)).collect();
    let (plus, rest) = match digits.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, digits.as_str()),
    };
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadNumber(number.to_string()));
    }
    let e164 = if plus {
        format!("+{rest}")
    } else if let Some(intl) = rest.strip_prefix("00") {
        format!("+{intl}")
    } else if let Some(national) = rest.strip_prefix('0') {
        format!("+{country_code}{national}")
    } else {
        format!("+{country_code}{rest}")
    };
    // E.164 numbers have at most 15 digits (ITU-T E.164 §6).
    if e164.len() > 16 || e164.len() < 4 {
        return Err(BadNumber(number.to_string()));
    }
    Ok(e164)
}

/// E.164 to the carrier's national format: `+4930123456` → `030123456`.
pub fn to_national(e164: &str, country_code: &str) -> String {
    match e164.strip_prefix('+') {
        Some(rest) => match rest.strip_prefix(country_code) {
            Some(national) => format!("0{national}"),
            None => format!("00{rest}"),
        },
        None => e164.to_string(),
    }
}

/// What a rule matches: a leading prefix, or a regular expression.
#[derive(Debug, Clone)]
pub enum Pattern {
    Prefix(String),
    Regex(regex::Regex),
}

/// One normalisation rule (`[[carrier.to_e164]]`, `[[carrier.from_e164]]`
/// in sbc.toml): a number that matches is rewritten, the prefix replaced
/// or the regex's match replaced with `replace` (`$1`... for its groups).
#[derive(Debug, Clone)]
pub struct Rule {
    pub pattern: Pattern,
    pub replace: String,
}

impl Rule {
    fn apply(&self, number: &str) -> Option<String> {
        match &self.pattern {
            Pattern::Prefix(p) => number
                .strip_prefix(p.as_str())
                .map(|rest| format!("{}{rest}", self.replace)),
            Pattern::Regex(re) => re
                .is_match(number)
                .then(|| re.replace(number, self.replace.as_str()).into_owned()),
        }
    }
}

/// The carrier's number formats: rules tried in order, the first that
/// matches wins; with none (or none matching) the country-code defaults
/// of [`to_e164`] and [`to_national`] apply.
#[derive(Debug, Clone, Default)]
pub struct NumberRules {
    /// Carrier format → E.164 (called and calling numbers from the carrier).
    pub to_e164: Vec<Rule>,
    /// E.164 → carrier format (numbers toward the carrier).
    pub from_e164: Vec<Rule>,
}

impl NumberRules {
    /// A carrier number as E.164 (Teams refuses anything else with 404,
    /// behaviour §3.1); the rewritten number must be `+` and 3–15 digits.
    pub fn e164(&self, number: &str, country_code: &str) -> Result<String, BadNumber> {
        let digits: String = number.chars().filter(|c| !"-.() ".contains(*c)).collect();
        match self.to_e164.iter().find_map(|r| r.apply(&digits)) {
            Some(n) => {
                let ok = n.strip_prefix('+').is_some_and(|d| {
                    (3..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())
                });
                if ok {
                    Ok(n)
                } else {
                    Err(BadNumber(format!("{number} (rewritten to {n})")))
                }
            }
            None => to_e164(number, country_code),
        }
    }

    /// An E.164 number in the carrier's format.
    pub fn carrier(&self, e164: &str, country_code: &str) -> String {
        self.from_e164
            .iter()
            .find_map(|r| r.apply(e164))
            .unwrap_or_else(|| to_national(e164, country_code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_rewrite_in_order_and_fall_back_to_the_country_code() {
        let rules = NumberRules {
            to_e164: vec![
                // A carrier that sends Swiss numbers without any prefix.
                Rule {
                    pattern: Pattern::Regex(regex::Regex::new(r"^(4[1-9]\d{7})$").unwrap()),
                    replace: "+41$1".into(),
                },
                Rule {
                    pattern: Pattern::Prefix("000".into()),
                    replace: "+".into(),
                },
                // Rewrites to something that is not E.164: refused.
                Rule {
                    pattern: Pattern::Prefix("99".into()),
                    replace: "x".into(),
                },
            ],
            from_e164: vec![Rule {
                pattern: Pattern::Prefix("+49".into()),
                replace: "0049".into(),
            }],
        };
        assert_eq!(rules.e164("441234567", "49").unwrap(), "+41441234567");
        assert_eq!(rules.e164("00014155550100", "49").unwrap(), "+14155550100");
        assert!(rules.e164("991234", "49").is_err());
        // No rule matches: the country-code defaults.
        assert_eq!(rules.e164("030123456", "49").unwrap(), "+4930123456");
        assert_eq!(rules.carrier("+4930123456", "49"), "004930123456");
        assert_eq!(rules.carrier("+14155550100", "49"), "0014155550100");
        // No rules at all: exactly the defaults.
        let none = NumberRules::default();
        assert_eq!(none.e164("+4930123456", "49").unwrap(), "+4930123456");
        assert_eq!(none.carrier("+4930123456", "49"), "030123456");
    }

    #[test]
    fn national_numbers_become_e164() {
        assert_eq!(to_e164("089000001", "49").unwrap(), "+4989000001");
        assert_eq!(to_e164("0041441234567", "49").unwrap(), "+41441234567");
        assert_eq!(to_e164("+4930123456", "49").unwrap(), "+4930123456");
        assert_eq!(to_e164("030-123 456", "49").unwrap(), "+4930123456");
        assert!(to_e164("anonymous", "49").is_err());
        assert!(to_e164("", "49").is_err());
        assert!(to_e164("01234567890123456789", "49").is_err());
    }

    #[test]
    fn e164_becomes_national() {
        assert_eq!(to_national("+4930123456", "49"), "030123456");
        assert_eq!(to_national("+14255550100", "49"), "0014255550100");
    }
}
