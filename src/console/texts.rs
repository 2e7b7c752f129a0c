//! What the console says, in English and Russian: one flat map of keys to texts per language
//! (`texts/en.json`, `texts/ru.json`), as the bot's. A test checks both files have the same keys
//! and that every key the console's code names exists.

use std::sync::LazyLock;

use crate::telegram::texts::{load, translate, Catalog};
pub use crate::telegram::texts::{money, Language};

static EN: LazyLock<Catalog> = LazyLock::new(|| load(include_str!("texts/en.json")));
static RU: LazyLock<Catalog> = LazyLock::new(|| load(include_str!("texts/ru.json")));

/// The text `key` in `language` (English, then the key itself, when missing: the test forbids
/// it).
pub fn t(language: Language, key: &str) -> String {
    translate(&EN, &RU, language, key, &[])
}

/// The text `key` with `{name}` placeholders filled from `args`.
pub fn tf(language: Language, key: &str, args: &[(&str, &str)]) -> String {
    translate(&EN, &RU, language, key, args)
}

/// An amount in `currency`'s minor units as a person types it: `890.00`, `500` (no grouping,
/// no code; what [`parse_amount`] reads back).
pub fn amount_text(amount_minor: i64, currency: aggregates::Currency) -> String {
    let decimals = usize::from(currency.minor_units());
    let sign = if amount_minor < 0 { "-" } else { "" };
    let digits = format!(
        "{:0>width$}",
        amount_minor.unsigned_abs(),
        width = decimals + 1
    );
    let (whole, fraction) = digits.split_at(digits.len() - decimals);
    if decimals == 0 {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    }
}

/// An amount typed by a person (`890`, `890.50`, `1 780,50`) in `currency`'s minor units;
/// `None` when it is no amount or has more decimals than the currency.
pub fn parse_amount(text: &str, currency: aggregates::Currency) -> Option<i64> {
    let text: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{a0}')
        .map(|c| if c == ',' { '.' } else { c })
        .collect();
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let decimals = usize::from(currency.minor_units());
    if whole.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !fraction.chars().all(|c| c.is_ascii_digit())
        || fraction.len() > decimals
    {
        return None;
    }
    let padded = format!("{whole}{fraction:0<decimals$}");
    padded.parse().ok()
}

/// A moment in the store's time zone (UTC when the store has none).
pub fn at(moment: chrono::DateTime<chrono::Utc>, time_zone: Option<&str>) -> String {
    match time_zone.and_then(|tz| tz.parse::<chrono_tz::Tz>().ok()) {
        Some(tz) => moment
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M")
            .to_string(),
        None => moment.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys the console's code names literally (`t(…, "key")`, `tf(…, "key"`, the
    /// column lists of `columns(language, &["key", …])`).
    fn keys_named_in(source: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for part in source.split("columns(language, &[").skip(1) {
            if let Some((list, _)) = part.split_once(']') {
                keys.extend(
                    list.split(',')
                        .map(|k| k.trim().trim_matches('"').to_owned()),
                );
            }
        }
        for opener in [
            "t(language, \"",
            "tf(language, \"",
            "t(lang, \"",
            "tf(lang, \"",
        ] {
            for part in source.split(opener).skip(1) {
                if let Some((key, _)) = part.split_once('"') {
                    keys.push(key.to_owned());
                }
            }
        }
        keys
    }

    #[test]
    fn both_languages_have_every_text_the_console_names() {
        crate::telegram::texts::assert_languages_agree(&EN, &RU);
        let sources = [
            include_str!("layout.rs"),
            include_str!("login.rs"),
            include_str!("desk.rs"),
            include_str!("orders.rs"),
            include_str!("inventory.rs"),
            include_str!("dashboard.rs"),
            include_str!("people.rs"),
            include_str!("notifications.rs"),
            include_str!("settings.rs"),
        ];
        let named: Vec<String> = sources.iter().flat_map(|s| keys_named_in(s)).collect();
        assert!(
            named.len() > 50,
            "the scan finds the texts: {}",
            named.len()
        );
        for key in &named {
            assert!(EN.contains_key(key), "no text {key:?}");
        }
    }

    #[test]
    fn amounts_are_read_in_the_currencys_minor_units() {
        let rub: aggregates::Currency = "RUB".parse().unwrap();
        let jpy: aggregates::Currency = "JPY".parse().unwrap();
        assert_eq!(parse_amount("890", rub), Some(890_00));
        assert_eq!(parse_amount("1 780,5", rub), Some(1780_50));
        assert_eq!(parse_amount("0.05", rub), Some(5));
        assert_eq!(parse_amount("500", jpy), Some(500));
        for bad in ["", "-5", "1.234", "12a", ".5", "1e3"] {
            assert_eq!(parse_amount(bad, rub), None, "{bad}");
        }
        assert_eq!(parse_amount("5.5", jpy), None);
        for (amount, currency) in [(890_00, rub), (5, rub), (500, jpy), (0, rub)] {
            assert_eq!(
                parse_amount(&amount_text(amount, currency), currency),
                Some(amount)
            );
        }
        assert_eq!(amount_text(1780_50, rub), "1780.50");
    }

    #[test]
    fn times_are_shown_in_the_stores_zone() {
        let moment = "2026-11-30T06:00:00Z".parse().unwrap();
        assert_eq!(at(moment, Some("Europe/Moscow")), "2026-11-30 09:00");
        assert_eq!(at(moment, None), "2026-11-30 06:00 UTC");
    }
}
