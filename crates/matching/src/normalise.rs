//! Canonical forms of identifiers, so that spelling differences do not hide a match.

/// Lowercased, trimmed e-mail address; `None` if it is not one.
pub fn email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let valid = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email.chars().any(char::is_whitespace);
    valid.then_some(email)
}

/// The phone number in E.164 form (`+441632960001`), given the country calling code to
/// assume for national numbers; `None` if it cannot be one.
pub fn phone(raw: &str, default_country_code: &str) -> Option<String> {
    let trimmed = raw.trim();
    if trimmed.chars().any(|c| c.is_alphabetic()) {
        return None;
    }
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    let international = if trimmed.starts_with('+') {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else if let Some(rest) = digits.strip_prefix('0') {
        format!("{default_country_code}{rest}")
    } else {
        format!("{default_country_code}{digits}")
    };
    (8..=15)
        .contains(&international.len())
        .then(|| format!("+{international}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_case_and_space_insensitive() {
        assert_eq!(
            email("  Ann.Lee@Example.ORG ").as_deref(),
            Some("ann.lee@example.org")
        );
        assert_eq!(email("not an email"), None);
        assert_eq!(email("a@b"), None);
    }

    #[test]
    fn phone_forms_agree_in_e164() {
        let expected = Some("+441632960001".to_owned());
        assert_eq!(phone("+44 1632 960001", "44"), expected);
        assert_eq!(phone("0044 1632 960001", "44"), expected);
        assert_eq!(phone("01632 960001", "44"), expected);
        assert_eq!(phone("n/a", "44"), None);
        assert_eq!(phone("12", "44"), None);
    }
}
