//! The `Product` aggregate: one item a store sells, its details, price and lifecycle.
//!
//! Invariants guarded here:
//! - a product is created once, in its store's currency, with a name (1..=200 characters), a
//!   description of at most 2000 characters (possibly empty), a SKU of 1..=64 characters from
//!   `[A-Za-z0-9._-]` and a positive price of at most 10^12 minor units;
//! - the price never changes currency;
//! - an archived product's details and price are frozen until it is reactivated.
//!
//! SKU uniqueness within a store spans many products and is checked by the application layer.
//! Stock is held by the separate `Stock` aggregate (same id as the product).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::values::{non_empty_text, Currency, Money, ProductId, StoreId, MAX_TEXT_LEN};

/// Longest accepted product name, in characters.
pub const MAX_PRODUCT_NAME_LEN: usize = 200;
/// Longest accepted SKU, in characters.
pub const MAX_SKU_LEN: usize = 64;
/// Largest accepted price, in minor units.
pub const MAX_PRICE_MINOR: i64 = 1_000_000_000_000;

/// Whether a product is on sale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProductStatus {
    #[default]
    Active,
    Archived,
}

/// State of one product, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub product_id: ProductId,
    pub store_id: StoreId,
    pub created: bool,
    pub name: String,
    /// Empty when the product has no description.
    pub description: String,
    pub sku: String,
    /// `None` only before creation.
    pub price: Option<Money>,
    pub status: ProductStatus,
    /// When the product was created and last changed (for views built right after a command).
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

impl Product {
    /// Whether `CreateProduct` has happened.
    pub fn is_created(&self) -> bool {
        self.created
    }

    /// Created and not archived.
    pub fn is_active(&self) -> bool {
        self.created && self.status == ProductStatus::Active
    }

    /// The current price (`None` before creation).
    pub fn price(&self) -> Option<Money> {
        self.price
    }

    pub fn store_id(&self) -> StoreId {
        self.store_id
    }

    pub fn status(&self) -> ProductStatus {
        self.status
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn sku(&self) -> &str {
        &self.sku
    }
}

/// What can be asked of a product.
#[derive(Debug, Clone, PartialEq)]
pub enum ProductCommand {
    CreateProduct {
        product_id: ProductId,
        store_id: StoreId,
        /// The store's currency, loaded by the application layer.
        store_currency: Currency,
        name: String,
        /// May be empty.
        description: String,
        sku: Sku,
        price: Money,
        at: DateTime<Utc>,
    },
    /// `None` leaves a detail unchanged; `Some("")` as description clears it.
    UpdateDetails {
        name: Option<String>,
        description: Option<String>,
        sku: Option<Sku>,
        at: DateTime<Utc>,
    },
    ChangePrice {
        price: Money,
        at: DateTime<Utc>,
    },
    Archive {
        at: DateTime<Utc>,
    },
    Reactivate {
        at: DateTime<Utc>,
    },
}

/// What happened to a product.
/// Stored as `{"VariantName": {...}}`; the variant name is the event type (`strum`
/// derives it, so the two cannot drift apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum ProductEvent {
    ProductCreated {
        product_id: ProductId,
        store_id: StoreId,
        name: String,
        /// Empty when the product has no description.
        description: String,
        sku: String,
        price: Money,
        created_at: DateTime<Utc>,
    },
    /// Only the details that changed are `Some`; `description: Some("")` means it was cleared.
    ProductDetailsChanged {
        name: Option<String>,
        description: Option<String>,
        sku: Option<String>,
        at: DateTime<Utc>,
    },
    ProductPriceChanged {
        previous_price: Money,
        price: Money,
        at: DateTime<Utc>,
    },
    ProductArchived {
        at: DateTime<Utc>,
    },
    ProductReactivated {
        at: DateTime<Utc>,
    },
}

/// Why a product command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("product not found")]
    NotFound,
    #[error("the product already exists")]
    AlreadyExists,
    #[error("the product name must be 1 to 200 characters")]
    InvalidName,
    #[error("the product description must be at most 2000 characters")]
    InvalidDescription,
    #[error("the SKU must be 1 to 64 characters of letters, digits, '.', '_' or '-'")]
    InvalidSku,
    #[error("the price must be greater than zero and at most 1000000000000 minor units")]
    InvalidPrice,
    #[error("the price must be in {expected}, not {got}")]
    CurrencyMismatch { expected: Currency, got: Currency },
    #[error("the product is archived; reactivate it first")]
    Archived,
    #[error("the product is already archived")]
    AlreadyArchived,
    #[error("the product is not archived")]
    NotArchived,
}

fn valid_name(name: &str) -> Result<String, ProductError> {
    non_empty_text(name, MAX_PRODUCT_NAME_LEN).ok_or(ProductError::InvalidName)
}

/// A description may be empty (stored as `""`); otherwise it is trimmed and bounded.
fn valid_description(description: &str) -> Result<String, ProductError> {
    if description.trim().is_empty() {
        return Ok(String::new());
    }
    non_empty_text(description, MAX_TEXT_LEN).ok_or(ProductError::InvalidDescription)
}

/// A stock-keeping unit: trimmed, 1 to `MAX_SKU_LEN` ASCII letters, digits, `.`, `_` or `-`.
/// Unique within a store regardless of case ([`Sku::key`]). Parsed where input enters, so a
/// command can only carry a valid one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    pub fn parse(sku: &str) -> Result<Self, ProductError> {
        non_empty_text(sku, MAX_SKU_LEN)
            .filter(|sku| {
                sku.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            })
            .map(Sku)
            .ok_or(ProductError::InvalidSku)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form that must be unique within a store (case-insensitive).
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl TryFrom<String> for Sku {
    type Error = ProductError;
    fn try_from(sku: String) -> Result<Self, ProductError> {
        Self::parse(&sku)
    }
}

impl From<Sku> for String {
    fn from(sku: Sku) -> String {
        sku.0
    }
}

fn valid_price(price: Money, expected: Currency) -> Result<Money, ProductError> {
    if price.currency != expected {
        return Err(ProductError::CurrencyMismatch {
            expected,
            got: price.currency,
        });
    }
    if price.amount_minor <= 0 || price.amount_minor > MAX_PRICE_MINOR {
        return Err(ProductError::InvalidPrice);
    }
    Ok(price)
}

/// `Some(new)` if `new` is given and differs from `current`.
fn changed(new: Option<String>, current: &str) -> Option<String> {
    new.filter(|value| value != current)
}

impl Aggregate for Product {
    const TYPE: &'static str = "Product";
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if !self.created && !matches!(command, ProductCommand::CreateProduct { .. }) {
            return Err(ProductError::NotFound);
        }
        match command {
            ProductCommand::CreateProduct {
                product_id,
                store_id,
                store_currency,
                name,
                description,
                sku,
                price,
                at,
            } => {
                if self.created {
                    return Err(ProductError::AlreadyExists);
                }
                let event = ProductEvent::ProductCreated {
                    product_id,
                    store_id,
                    name: valid_name(&name)?,
                    description: valid_description(&description)?,
                    sku: sku.into(),
                    price: valid_price(price, store_currency)?,
                    created_at: at,
                };
                sink.write(event, self).await;
            }
            ProductCommand::UpdateDetails {
                name,
                description,
                sku,
                at,
            } => {
                if self.status == ProductStatus::Archived {
                    return Err(ProductError::Archived);
                }
                let name = name.as_deref().map(valid_name).transpose()?;
                let description = description.as_deref().map(valid_description).transpose()?;
                let sku = sku.map(String::from);

                let name = changed(name, &self.name);
                let description = changed(description, &self.description);
                let sku = changed(sku, &self.sku);
                if name.is_none() && description.is_none() && sku.is_none() {
                    return Ok(());
                }
                let event = ProductEvent::ProductDetailsChanged {
                    name,
                    description,
                    sku,
                    at,
                };
                sink.write(event, self).await;
            }
            ProductCommand::ChangePrice { price, at } => {
                if self.status == ProductStatus::Archived {
                    return Err(ProductError::Archived);
                }
                let previous_price = self.price.ok_or(ProductError::NotFound)?;
                let price = valid_price(price, previous_price.currency)?;
                if price == previous_price {
                    return Ok(());
                }
                let event = ProductEvent::ProductPriceChanged {
                    previous_price,
                    price,
                    at,
                };
                sink.write(event, self).await;
            }
            ProductCommand::Archive { at } => {
                if self.status == ProductStatus::Archived {
                    return Err(ProductError::AlreadyArchived);
                }
                sink.write(ProductEvent::ProductArchived { at }, self).await;
            }
            ProductCommand::Reactivate { at } => {
                if self.status != ProductStatus::Archived {
                    return Err(ProductError::NotArchived);
                }
                sink.write(ProductEvent::ProductReactivated { at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProductEvent::ProductCreated {
                product_id,
                store_id,
                name,
                description,
                sku,
                price,
                created_at,
            } => {
                self.created_at = Some(created_at);
                self.updated_at = Some(created_at);
                self.product_id = product_id;
                self.store_id = store_id;
                self.created = true;
                self.name = name;
                self.description = description;
                self.sku = sku;
                self.price = Some(price);
                self.status = ProductStatus::Active;
            }
            ProductEvent::ProductDetailsChanged {
                name,
                description,
                sku,
                at,
            } => {
                self.updated_at = Some(at);
                if let Some(name) = name {
                    self.name = name;
                }
                if let Some(description) = description {
                    self.description = description;
                }
                if let Some(sku) = sku {
                    self.sku = sku;
                }
            }
            ProductEvent::ProductPriceChanged { price, at, .. } => {
                self.price = Some(price);
                self.updated_at = Some(at);
            }
            ProductEvent::ProductArchived { at } => {
                self.status = ProductStatus::Archived;
                self.updated_at = Some(at);
            }
            ProductEvent::ProductReactivated { at } => {
                self.status = ProductStatus::Active;
                self.updated_at = Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent as _;
    use uuid::Uuid;

    type ProductTest = TestFramework<Product>;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    fn product_id() -> ProductId {
        ProductId(Uuid::from_u128(2))
    }

    fn store_id() -> StoreId {
        StoreId(Uuid::from_u128(1))
    }

    fn rub() -> Currency {
        "RUB".parse().unwrap()
    }

    fn eur() -> Currency {
        "EUR".parse().unwrap()
    }

    fn rubles(amount_minor: i64) -> Money {
        Money::new(amount_minor, rub())
    }

    fn create() -> ProductCommand {
        ProductCommand::CreateProduct {
            product_id: product_id(),
            store_id: store_id(),
            store_currency: rub(),
            name: " Green tea ".into(),
            description: "  ".into(),
            sku: Sku::parse("TEA-001").unwrap(),
            price: rubles(45_000),
            at: at(),
        }
    }

    fn create_with(edit: impl FnOnce(&mut ProductCommand)) -> ProductCommand {
        let mut command = create();
        edit(&mut command);
        command
    }

    fn created() -> ProductEvent {
        ProductEvent::ProductCreated {
            product_id: product_id(),
            store_id: store_id(),
            name: "Green tea".into(),
            description: String::new(),
            sku: "TEA-001".into(),
            price: rubles(45_000),
            created_at: at(),
        }
    }

    fn archived() -> Vec<ProductEvent> {
        vec![created(), ProductEvent::ProductArchived { at: at() }]
    }

    fn details(name: Option<&str>, description: Option<&str>, sku: Option<&str>) -> ProductCommand {
        ProductCommand::UpdateDetails {
            name: name.map(str::to_owned),
            description: description.map(str::to_owned),
            sku: sku.map(|sku| Sku::parse(sku).unwrap()),
            at: at(),
        }
    }

    #[test]
    fn creating_a_product_records_it_with_trimmed_texts() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(create())
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn creating_a_product_twice_is_refused() {
        ProductTest::with(())
            .given(vec![created()])
            .when(create())
            .then_expect_error(ProductError::AlreadyExists);
    }

    #[test]
    fn creating_a_product_without_a_name_is_refused() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(create_with(|c| {
                if let ProductCommand::CreateProduct { name, .. } = c {
                    *name = "\t".into();
                }
            }))
            .then_expect_error(ProductError::InvalidName);
    }

    #[test]
    fn creating_a_product_with_a_description_over_2000_characters_is_refused() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(create_with(|c| {
                if let ProductCommand::CreateProduct { description, .. } = c {
                    *description = "d".repeat(MAX_TEXT_LEN + 1);
                }
            }))
            .then_expect_error(ProductError::InvalidDescription);
    }

    #[test]
    fn creating_a_product_with_a_zero_price_is_refused() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(create_with(|c| {
                if let ProductCommand::CreateProduct { price, .. } = c {
                    *price = rubles(0);
                }
            }))
            .then_expect_error(ProductError::InvalidPrice);
    }

    #[test]
    fn creating_a_product_with_a_price_over_a_trillion_minor_units_is_refused() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(create_with(|c| {
                if let ProductCommand::CreateProduct { price, .. } = c {
                    *price = rubles(MAX_PRICE_MINOR + 1);
                }
            }))
            .then_expect_error(ProductError::InvalidPrice);
    }

    #[test]
    fn creating_a_product_priced_in_another_currency_than_the_store_is_refused() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(create_with(|c| {
                if let ProductCommand::CreateProduct { price, .. } = c {
                    *price = Money::new(100, eur());
                }
            }))
            .then_expect_error(ProductError::CurrencyMismatch {
                expected: rub(),
                got: eur(),
            });
    }

    #[test]
    fn updating_details_records_only_the_details_that_change() {
        ProductTest::with(())
            .given(vec![created()])
            .when(details(
                Some("Green tea"),
                Some(" Sencha "),
                Some("TEA_002"),
            ))
            .then_expect_events(vec![ProductEvent::ProductDetailsChanged {
                name: None,
                description: Some("Sencha".into()),
                sku: Some("TEA_002".into()),
                at: at(),
            }]);
    }

    #[test]
    fn clearing_the_description_records_it_as_empty() {
        ProductTest::with(())
            .given(vec![
                created(),
                ProductEvent::ProductDetailsChanged {
                    name: None,
                    description: Some("Sencha".into()),
                    sku: None,
                    at: at(),
                },
            ])
            .when(details(None, Some("  "), None))
            .then_expect_events(vec![ProductEvent::ProductDetailsChanged {
                name: None,
                description: Some(String::new()),
                sku: None,
                at: at(),
            }]);
    }

    #[test]
    fn updating_details_to_their_current_values_records_nothing() {
        ProductTest::with(())
            .given(vec![created()])
            .when(details(Some("Green tea "), Some(""), Some("TEA-001")))
            .then_expect_events(vec![]);
    }

    #[test]
    fn updating_no_details_records_nothing() {
        ProductTest::with(())
            .given(vec![created()])
            .when(details(None, None, None))
            .then_expect_events(vec![]);
    }

    #[test]
    fn updating_details_of_a_missing_product_is_refused() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(details(Some("x"), None, None))
            .then_expect_error(ProductError::NotFound);
    }

    #[test]
    fn updating_details_of_an_archived_product_is_refused() {
        ProductTest::with(())
            .given(archived())
            .when(details(Some("Black tea"), None, None))
            .then_expect_error(ProductError::Archived);
    }

    #[test]
    fn updating_the_name_to_blank_is_refused() {
        ProductTest::with(())
            .given(vec![created()])
            .when(details(Some(""), None, None))
            .then_expect_error(ProductError::InvalidName);
    }

    #[test]
    fn updating_the_description_beyond_2000_characters_is_refused() {
        let long = "d".repeat(MAX_TEXT_LEN + 1);
        ProductTest::with(())
            .given(vec![created()])
            .when(details(None, Some(&long), None))
            .then_expect_error(ProductError::InvalidDescription);
    }

    #[test]
    fn changing_the_price_records_the_previous_price() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::ChangePrice {
                price: rubles(50_000),
                at: at(),
            })
            .then_expect_events(vec![ProductEvent::ProductPriceChanged {
                previous_price: rubles(45_000),
                price: rubles(50_000),
                at: at(),
            }]);
    }

    #[test]
    fn changing_the_price_to_the_same_price_records_nothing() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::ChangePrice {
                price: rubles(45_000),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn changing_the_price_of_a_missing_product_is_refused() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::ChangePrice {
                price: rubles(1),
                at: at(),
            })
            .then_expect_error(ProductError::NotFound);
    }

    #[test]
    fn changing_the_price_of_an_archived_product_is_refused() {
        ProductTest::with(())
            .given(archived())
            .when(ProductCommand::ChangePrice {
                price: rubles(1),
                at: at(),
            })
            .then_expect_error(ProductError::Archived);
    }

    #[test]
    fn changing_the_price_to_another_currency_is_refused() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::ChangePrice {
                price: Money::new(500, eur()),
                at: at(),
            })
            .then_expect_error(ProductError::CurrencyMismatch {
                expected: rub(),
                got: eur(),
            });
    }

    #[test]
    fn changing_the_price_to_a_negative_amount_is_refused() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::ChangePrice {
                price: rubles(-1),
                at: at(),
            })
            .then_expect_error(ProductError::InvalidPrice);
    }

    #[test]
    fn archiving_a_product_records_it() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::Archive { at: at() })
            .then_expect_events(vec![ProductEvent::ProductArchived { at: at() }]);
    }

    #[test]
    fn archiving_an_archived_product_is_refused() {
        ProductTest::with(())
            .given(archived())
            .when(ProductCommand::Archive { at: at() })
            .then_expect_error(ProductError::AlreadyArchived);
    }

    #[test]
    fn archiving_a_missing_product_is_refused() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::Archive { at: at() })
            .then_expect_error(ProductError::NotFound);
    }

    #[test]
    fn reactivating_an_archived_product_records_it() {
        ProductTest::with(())
            .given(archived())
            .when(ProductCommand::Reactivate { at: at() })
            .then_expect_events(vec![ProductEvent::ProductReactivated { at: at() }]);
    }

    #[test]
    fn reactivating_an_active_product_is_refused() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::Reactivate { at: at() })
            .then_expect_error(ProductError::NotArchived);
    }

    #[test]
    fn reactivating_a_missing_product_is_refused() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::Reactivate { at: at() })
            .then_expect_error(ProductError::NotFound);
    }

    #[test]
    fn state_reflects_details_price_and_status() {
        let mut product = Product::default();
        assert!(!product.is_created());
        assert!(!product.is_active());
        product.apply(created());
        product.apply(ProductEvent::ProductDetailsChanged {
            name: Some("Black tea".into()),
            description: Some("Assam".into()),
            sku: None,
            at: at(),
        });
        product.apply(ProductEvent::ProductPriceChanged {
            previous_price: rubles(45_000),
            price: rubles(9_900),
            at: at(),
        });
        assert!(product.is_active());
        assert_eq!(product.store_id(), store_id());
        assert_eq!(product.price(), Some(rubles(9_900)));
        assert_eq!(product.name(), "Black tea");
        assert_eq!(product.description(), "Assam");
        assert_eq!(product.sku(), "TEA-001");
        product.apply(ProductEvent::ProductArchived { at: at() });
        assert!(!product.is_active());
        assert_eq!(product.status(), ProductStatus::Archived);

        let json = serde_json::to_string(&product).unwrap();
        assert_eq!(serde_json::from_str::<Product>(&json).unwrap(), product);
    }

    #[test]
    fn events_serialise_externally_tagged_by_their_variant_name() {
        let event = ProductEvent::ProductPriceChanged {
            previous_price: rubles(45_000),
            price: rubles(50_000),
            at: at(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(event.event_type(), "ProductPriceChanged");
        assert_eq!(event.event_version(), crate::EVENT_VERSION_1);
        assert_eq!(
            json,
            serde_json::json!({"ProductPriceChanged": {
                "previous_price": {"amount_minor": 45000, "currency": "RUB"},
                "price": {"amount_minor": 50000, "currency": "RUB"},
                "at": "2025-03-01T12:00:00Z"
            }})
        );
        assert_eq!(serde_json::from_value::<ProductEvent>(json).unwrap(), event);

        for event in [
            created(),
            ProductEvent::ProductArchived { at: at() },
            ProductEvent::ProductReactivated { at: at() },
        ] {
            let json = serde_json::to_value(&event).unwrap();
            let object = json.as_object().unwrap();
            assert_eq!(object.len(), 1);
            assert!(object.contains_key(&event.event_type()));
            assert_eq!(serde_json::from_value::<ProductEvent>(json).unwrap(), event);
        }
    }

    #[test]
    fn an_sku_is_ascii_letters_digits_and_dot_dash_underscore_up_to_64() {
        assert_eq!(Sku::parse(" TEA-001 ").unwrap().as_str(), "TEA-001");
        assert_eq!(Sku::parse("TEA 001"), Err(ProductError::InvalidSku));
        assert_eq!(Sku::parse(&"A".repeat(65)), Err(ProductError::InvalidSku));
        assert_eq!(Sku::parse(""), Err(ProductError::InvalidSku));
        assert_eq!(Sku::parse("чай"), Err(ProductError::InvalidSku));
        assert_eq!(Sku::parse("Tea-001").unwrap().key(), "tea-001");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn an_sku_is_accepted_iff_it_has_1_to_64_allowed_characters(sku in "\\PC{0,70}") {
                let result = Sku::parse(&sku);
                let trimmed = sku.trim();
                let ok = !trimmed.is_empty()
                    && trimmed.chars().count() <= MAX_SKU_LEN
                    && trimmed.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                prop_assert_eq!(result.is_ok(), ok);
            }

            #[test]
            fn a_price_is_accepted_iff_it_is_positive_and_at_most_a_trillion(amount in any::<i64>()) {
                let ok = amount > 0 && amount <= MAX_PRICE_MINOR;
                prop_assert_eq!(valid_price(rubles(amount), rub()).is_ok(), ok);
            }
        }
    }
}
