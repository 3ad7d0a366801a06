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

#[cfg(test)]
mod tests {
    use super::*;

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
