//! Validated domain values: the front end parses raw request fields into these, so deeper code
//! never checks a string twice. Each parser names the field it refused.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A value that is well-typed but not acceptable (the API's 422 `invalid`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The request field that was refused, as the client spelled it.
    pub field: &'static str,
    /// Why, in words.
    pub reason: String,
}

impl Invalid {
    /// Builds the refusal of one field.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// A normalised (trimmed, lower-cased) e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Normalises and checks an address: one `@`, a non-empty local part, a dotted domain.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let email = raw.trim().to_lowercase();
        let invalid = || Invalid::new("email", "must be an e-mail address like name@example.com");
        if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let labels_ok = domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
        if local.is_empty() || local.len() > 64 || !domain.contains('.') || !labels_ok {
            return Err(invalid());
        }
        Ok(Self(email))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password that meets the policy: 8 to 1024 characters (the cap keeps Argon2 cheap to refuse).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Checks the length policy.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let chars = raw.chars().count();
        if chars < 8 {
            return Err(Invalid::new("password", "must be at least 8 characters"));
        }
        if chars > 1024 {
            return Err(Invalid::new("password", "must be at most 1024 characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The password itself, for hashing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    // A password must never reach a log line, even through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// What an account may do: buyers order and pay, sellers list products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    Buyer,
    Seller,
}

impl Role {
    /// Parses the wire spelling (`BUYER` or `SELLER`).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "BUYER" => Ok(Role::Buyer),
            "SELLER" => Ok(Role::Seller),
            _ => Err(Invalid::new("role", "must be BUYER or SELLER")),
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Buyer => "BUYER",
            Role::Seller => "SELLER",
        }
    }
}

/// Refuses text holding U+0000: PostgreSQL cannot store it, and the API answers the same on
/// either backend.
pub fn refuse_nul(field: &'static str, raw: &str) -> Result<(), Invalid> {
    if raw.contains('\0') {
        return Err(Invalid::new(field, "must not contain the NUL character"));
    }
    Ok(())
}

/// A display name: 1 to 100 characters after trimming.
pub fn parse_name(field: &'static str, raw: &str, max_chars: usize) -> Result<String, Invalid> {
    refuse_nul(field, raw)?;
    let name = raw.trim();
    if name.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if name.chars().count() > max_chars {
        return Err(Invalid::new(field, format!("must be at most {max_chars} characters")));
    }
    Ok(name.to_owned())
}

/// A number of units ordered: 1 to 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl TryFrom<i64> for Quantity {
    type Error = Invalid;

    fn try_from(value: i64) -> Result<Self, Invalid> {
        if !(1..=1_000_000).contains(&value) {
            return Err(Invalid::new("quantity", "must be between 1 and 1000000"));
        }
        Ok(Self(value as u32))
    }
}

impl Quantity {
    /// The number of units.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// The largest price or stock accepted, so amounts (price × quantity) never overflow an i64.
pub const MAX_PRICE: i64 = 1_000_000_000_000;
/// The largest stock a product may hold.
pub const MAX_STOCK: i64 = 1_000_000_000;

/// Checks a price in the smallest currency unit: 0 to [`MAX_PRICE`].
pub fn parse_price(value: i64) -> Result<i64, Invalid> {
    if !(0..=MAX_PRICE).contains(&value) {
        return Err(Invalid::new("price", format!("must be between 0 and {MAX_PRICE}")));
    }
    Ok(value)
}

/// Checks a stock count: 0 to [`MAX_STOCK`].
pub fn parse_stock(value: i64) -> Result<i64, Invalid> {
    if !(0..=MAX_STOCK).contains(&value) {
        return Err(Invalid::new("stock", format!("must be between 0 and {MAX_STOCK}")));
    }
    Ok(value)
}

/// Checks an ISO 4217-shaped currency code (three upper-case letters).
pub fn parse_currency(raw: &str) -> Result<String, Invalid> {
    if raw.len() == 3 && raw.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(raw.to_owned())
    } else {
        Err(Invalid::new("currency", "must be three upper-case letters, like KRW"))
    }
}

/// The most characters a chat message may have.
pub const MAX_CHAT_CHARS: usize = 4000;

/// Checks a chat text: 1 to 4000 Unicode characters (not bytes).
pub fn parse_chat_text(raw: &str) -> Result<String, Invalid> {
    refuse_nul("text", raw)?;
    let chars = raw.chars().count();
    if chars == 0 || chars > MAX_CHAT_CHARS {
        return Err(Invalid::new("text", format!("must be 1 to {MAX_CHAT_CHARS} characters")));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_with_a_nul_character_is_refused_everywhere_it_is_stored() {
        assert!(parse_name("name", "a\0b", 100).is_err());
        assert!(parse_chat_text("hi\0").is_err());
        assert!(refuse_nul("cursor", "\u{FFFD}\0garbage").is_err());
        assert_eq!(parse_name("name", " ok ", 100).unwrap(), "ok");
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(Email::parse("  Ann@Example.COM ").unwrap().as_str(), "ann@example.com");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in ["", "ann", "@x.com", "ann@", "ann@com", "a b@x.com", "ann@x..com", "ann@-x.com"] {
            assert_eq!(Email::parse(bad).unwrap_err().field, "email", "{bad}");
        }
    }

    #[test]
    fn short_passwords_are_refused_and_never_printed() {
        assert!(Password::parse("1234567").is_err());
        let ok = Password::parse("12345678").unwrap();
        assert!(!format!("{ok:?}").contains("1234"));
    }

    #[test]
    fn quantity_zero_and_negative_are_invalid() {
        assert!(Quantity::try_from(0).is_err());
        assert!(Quantity::try_from(-3).is_err());
        assert_eq!(Quantity::try_from(3).unwrap().get(), 3);
    }

    #[test]
    fn chat_text_counts_characters_not_bytes() {
        let korean = "안".repeat(MAX_CHAT_CHARS);
        assert!(parse_chat_text(&korean).is_ok());
        assert!(parse_chat_text(&format!("{korean}x")).is_err());
        assert!(parse_chat_text("").is_err());
    }
}
