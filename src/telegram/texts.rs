//! Everything the bot says, in English and Russian, from the translation files beside this
//! module (`texts/en.json`, `texts/ru.json`: one flat map of keys to texts with `{name}`
//! placeholders). A test checks both files have the same keys and placeholders.

use std::collections::HashMap;
use std::sync::LazyLock;

use aggregates::Currency;

/// A language the bot speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    En,
    Ru,
}

impl Language {
    /// The language for a Telegram `language_code` (Russian for `ru`, English otherwise).
    pub fn from_code(code: Option<&str>) -> Self {
        match code.map(|c| c.split(['-', '_']).next().unwrap_or_default()) {
            Some("ru") | Some("uk") | Some("be") | Some("kk") => Language::Ru,
            _ => Language::En,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Ru => "ru",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "en" => Some(Language::En),
            "ru" => Some(Language::Ru),
            _ => None,
        }
    }

    /// The other language (what `/language` switches to).
    pub fn other(self) -> Self {
        match self {
            Language::En => Language::Ru,
            Language::Ru => Language::En,
        }
    }
}

/// One language's texts: keys to texts with `{name}` placeholders.
pub(crate) type Catalog = HashMap<String, String>;

/// A catalog from its JSON file (empty if it does not parse: a test forbids that).
pub(crate) fn load(json: &str) -> Catalog {
    serde_json::from_str(json).unwrap_or_default()
}

/// The text `key` of the catalogs `en` and `ru` in `language` with `{name}` placeholders
/// filled from `args`; a key missing from a catalog falls back to English, then to the key
/// itself. What the bot's and the console's texts both are.
pub(crate) fn translate(
    en: &Catalog,
    ru: &Catalog,
    language: Language,
    key: &str,
    args: &[(&str, &str)],
) -> String {
    let catalog = match language {
        Language::En => en,
        Language::Ru => ru,
    };
    let template = catalog
        .get(key)
        .or_else(|| en.get(key))
        .map(String::as_str)
        .unwrap_or(key);
    let mut text = template.to_owned();
    for (name, value) in args {
        text = text.replace(&format!("{{{name}}}"), value);
    }
    text
}

static EN: LazyLock<Catalog> = LazyLock::new(|| load(include_str!("texts/en.json")));
static RU: LazyLock<Catalog> = LazyLock::new(|| load(include_str!("texts/ru.json")));

/// The text `key` in `language` with `{name}` placeholders filled from `args`. A key missing
/// from a file (the test forbids it) falls back to English, then to the key itself.
pub fn t(language: Language, key: &str, args: &[(&str, &str)]) -> String {
    translate(&EN, &RU, language, key, args)
}

/// An amount in its currency's minor units, written with the currency's decimals and code:
/// `1 780.00 RUB`, `12.50 EUR`, `500 JPY`.
pub fn money(amount_minor: i64, currency: &str) -> String {
    let decimals = currency
        .parse::<Currency>()
        .ok()
        .map(|c| c.minor_units())
        .unwrap_or(2);
    let negative = amount_minor < 0;
    let digits = amount_minor.unsigned_abs().to_string();
    let decimals = decimals as usize;
    let (whole, fraction) = if decimals == 0 {
        (digits.as_str().to_owned(), String::new())
    } else {
        let padded = format!("{digits:0>width$}", width = decimals + 1);
        let (whole, fraction) = padded.split_at(padded.len() - decimals);
        (whole.to_owned(), format!(".{fraction}"))
    };
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push('\u{a0}');
        }
        grouped.push(c);
    }
    format!(
        "{}{grouped}{fraction} {currency}",
        if negative { "-" } else { "" }
    )
}

/// For the texts' tests: both catalogs parsed, with the same keys, and each text with the same
/// placeholders in both.
#[cfg(test)]
pub(crate) fn assert_languages_agree(en: &Catalog, ru: &Catalog) {
    fn placeholders(text: &str) -> Vec<String> {
        let mut names: Vec<String> = text
            .split('{')
            .skip(1)
            .filter_map(|part| part.split_once('}').map(|(name, _)| name.to_owned()))
            .collect();
        names.sort();
        names
    }
    assert!(!en.is_empty() && !ru.is_empty(), "the files parse");
    let mut keys: Vec<&String> = en.keys().collect();
    keys.sort();
    let mut ru_keys: Vec<&String> = ru.keys().collect();
    ru_keys.sort();
    assert_eq!(keys, ru_keys);
    for key in keys {
        assert_eq!(
            placeholders(&en[key]),
            placeholders(&ru[key]),
            "placeholders of {key}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_have_every_text_with_the_same_placeholders() {
        assert_languages_agree(&EN, &RU);
    }

    /// The keys the bot's code names literally (`t(…, "key"`, `talk.t("key"`, `text("key"`).
    fn keys_named_in(source: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for opener in ["t(\"", "text(\"", "t(language, \""] {
            for part in source.split(opener).skip(1) {
                if let Some((key, _)) = part.split_once('"') {
                    if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                        keys.push(key.to_owned());
                    }
                }
            }
        }
        keys
    }

    #[test]
    fn every_text_the_code_names_exists_and_every_status_has_a_name() {
        let sources = [
            include_str!("handlers.rs"),
            include_str!("deliveries.rs"),
            include_str!("mod.rs"),
            include_str!("../notify/render.rs"),
        ];
        let named: Vec<String> = sources.iter().flat_map(|s| keys_named_in(s)).collect();
        assert!(named.len() > 50, "the scan finds the texts: {named:?}");
        for key in &named {
            assert!(EN.contains_key(key), "no text {key:?}");
        }
        for status in aggregates::order::OrderStatus::ALL {
            let key = format!("status_{}", status.as_str());
            assert!(EN.contains_key(&key), "no text {key:?}");
        }
        for status in ["SUBMITTED", "VERIFIED", "REJECTED", "VOIDED"] {
            assert!(EN.contains_key(&format!("receipt_{status}")), "{status}");
        }
    }

    #[test]
    fn texts_are_filled_in_and_languages_follow_telegram() {
        assert_eq!(
            t(Language::En, "added", &[("name", "Tea"), ("quantity", "2")]),
            "Added Tea × 2."
        );
        assert_eq!(Language::from_code(Some("ru")), Language::Ru);
        assert_eq!(Language::from_code(Some("en-GB")), Language::En);
        assert_eq!(Language::from_code(None), Language::En);
    }

    #[test]
    fn amounts_use_the_currencys_minor_units() {
        assert_eq!(money(178_000, "RUB"), "1\u{a0}780.00 RUB");
        assert_eq!(money(1_250, "EUR"), "12.50 EUR");
        assert_eq!(money(5, "RUB"), "0.05 RUB");
        assert_eq!(money(500, "JPY"), "500 JPY");
    }
}
