//! Value types shared by the aggregates: ids, money, roles, channels and sealed personal data.
//!
//! Everything here is part of the event storage format: serialised shapes never change once
//! released (a new shape is a new type, reached through an upcaster).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered (UUID v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self(Uuid::nil())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// Identifies a store (and its `Store` aggregate).
    StoreId
);
id_type!(
    /// Identifies a product; also the id of the product's `Stock` aggregate (one per product).
    ProductId
);
id_type!(
    /// Identifies an order.
    OrderId
);
impl OrderId {
    /// The order's number as people say it: the last 8 hexadecimal digits of its id, in
    /// capitals (`4F2A9C1E`). Taken from the random end of the UUID v7, so two orders of one
    /// customer practically never share one; it finds an order among a customer's or a
    /// store's own orders, never globally.
    pub fn number(&self) -> String {
        let hex = self.0.simple().to_string();
        hex[hex.len() - 8..].to_ascii_uppercase()
    }
}

id_type!(
    /// Identifies a payment receipt.
    ReceiptId
);
id_type!(
    /// Identifies a person: staff member or customer.
    AccountId
);

/// An ISO 4217 currency code, validated on construction and on deserialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// The three-letter code, e.g. `RUB`.
    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    /// Number of minor units (2 for RUB and EUR, 0 for JPY).
    pub fn minor_units(&self) -> u16 {
        self.0.exponent().unwrap_or(0)
    }
}

/// The text given was not an ISO 4217 currency code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an ISO 4217 currency code")]
pub struct UnknownCurrency(pub String);

impl FromStr for Currency {
    type Err = UnknownCurrency;
    fn from_str(code: &str) -> Result<Self, Self::Err> {
        iso_currency::Currency::from_str(code)
            .map(Currency)
            .map_err(|_| UnknownCurrency(code.to_owned()))
    }
}

impl TryFrom<String> for Currency {
    type Error = UnknownCurrency;
    fn try_from(code: String) -> Result<Self, Self::Error> {
        code.parse()
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.code().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount of money: integer minor units (kopecks, cents) plus its currency. Never a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Self {
        Self {
            amount_minor,
            currency,
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (minor units)", self.amount_minor, self.currency)
    }
}

/// A staff role within one store. Ordered by power: `Owner > Admin > Vendor`; `Auditor` is a
/// read-only role outside that line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StoreRole {
    Owner,
    Admin,
    Vendor,
    Auditor,
}

impl StoreRole {
    /// The stable name used in events, APIs and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreRole::Owner => "OWNER",
            StoreRole::Admin => "ADMIN",
            StoreRole::Vendor => "VENDOR",
            StoreRole::Auditor => "AUDITOR",
        }
    }
}

impl fmt::Display for StoreRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a command came from. Part of every event's metadata, and recorded in some events
/// (a receipt remembers whether it was uploaded through the bot or the API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Api,
    Telegram,
    System,
    /// The staff's web console (`/console`).
    Console,
}

impl Channel {
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Api => "api",
            Channel::Telegram => "telegram",
            Channel::System => "system",
            Channel::Console => "console",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Personal data sealed with its subject's key (crypto-shredding, ARCHITECTURE rule 3).
///
/// The domain never sees clear personal data: the application layer seals it before a command
/// is built and opens it when a read model is built. Deleting the subject's key turns every copy
/// of this value, in every event, into noise, while the event (and any hash over it) stays intact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedPersonalData {
    /// The person whose key sealed this value.
    pub subject_id: AccountId,
    /// Cipher name, e.g. `xchacha20poly1305`.
    pub algorithm: String,
    /// Base64 nonce.
    pub nonce: String,
    /// Base64 ciphertext (with authentication tag).
    pub ciphertext: String,
}

/// A Telegram user id as an `Account` event carries it.
///
/// Since event version 2.0 the id is personal data like an e-mail: sealed with the account's own
/// key, so erasing the person erases it from the log too. Events of version 1.0 carried it in
/// clear; their upcaster (`crate::upcast`) hands it on as [`TelegramId::Legacy`], which no new
/// event ever holds. Stored untagged: a sealed object, or (legacy only) a bare number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TelegramId {
    Sealed(SealedPersonalData),
    /// In clear, as events before version 2.0 recorded it.
    Legacy(i64),
}

/// Longest accepted free-text field (names, descriptions, reasons), in characters.
pub const MAX_TEXT_LEN: usize = 2000;

/// Trims `text` and checks it is non-empty and at most `max` characters.
pub fn non_empty_text(text: &str, max: usize) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty() && trimmed.chars().count() <= max).then(|| trimmed.to_owned())
}

#[cfg(test)]
mod order_number_tests {
    use super::*;

    #[test]
    fn an_order_number_is_the_last_eight_hex_digits_in_capitals() {
        let id = OrderId(Uuid::parse_str("01934c4e-0000-7000-8000-00004f2a9c1e").unwrap());
        assert_eq!(id.number(), "4F2A9C1E");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_parse_from_iso_codes_only() {
        let rub: Currency = "RUB".parse().unwrap();
        assert_eq!(rub.code(), "RUB");
        assert_eq!(rub.minor_units(), 2);
        assert!("XYZ".parse::<Currency>().is_err());
        assert!(serde_json::from_str::<Currency>("\"rubles\"").is_err());
        assert_eq!(serde_json::to_string(&rub).unwrap(), "\"RUB\"");
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(non_empty_text("  hi ", 10).as_deref(), Some("hi"));
        assert_eq!(non_empty_text("   ", 10), None);
        assert_eq!(non_empty_text("abcdef", 5), None);
    }
}
