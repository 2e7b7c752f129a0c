//! The `Store` aggregate: one shop, its settings and its staff.
//!
//! Invariants guarded here:
//! - a store is created once, with a valid name, an ISO 4217 currency, an IANA time zone,
//!   non-empty payment instructions, a low-stock threshold of at most 1 000 000 and a
//!   reservation TTL of 5..=43 200 minutes; settings changes keep all of these valid;
//! - the currency is fixed at creation (there is no command to change it);
//! - a store always keeps at least one `Owner`: the last owner can be neither demoted nor
//!   revoked. This aggregate is the single authority over staff roles; an account's roles are a
//!   read model of `StaffRoleAssigned` / `StaffRoleRevoked`.
//!
//! Who may assign which role is authorization and lives in the application layer.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::values::{non_empty_text, AccountId, Currency, StoreId, StoreRole, MAX_TEXT_LEN};

/// Longest accepted store name, in characters.
pub const MAX_STORE_NAME_LEN: usize = 200;
/// Shortest accepted reservation TTL, in minutes.
pub const MIN_RESERVATION_TTL_MINUTES: u32 = 5;
/// Longest accepted reservation TTL, in minutes (30 days).
pub const MAX_RESERVATION_TTL_MINUTES: u32 = 43_200;
/// Largest accepted default low-stock threshold.
pub const MAX_LOW_STOCK_THRESHOLD: u32 = 1_000_000;

/// State of one store, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Store {
    pub store_id: StoreId,
    pub created: bool,
    pub name: String,
    /// `None` only before creation.
    pub currency: Option<Currency>,
    /// IANA time zone name, e.g. `Europe/Moscow`.
    pub timezone: String,
    /// Bank details shown to customers.
    pub payment_instructions: String,
    pub default_low_stock_threshold: u32,
    pub reservation_ttl_minutes: u32,
    pub staff: BTreeMap<AccountId, StoreRole>,
    /// When the store was created, and when its settings last changed (for views built right
    /// after a command, before projections catch up).
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// Customers this store no longer takes orders from.
    #[serde(default)]
    pub blocked_customers: std::collections::BTreeSet<AccountId>,
}

impl Store {
    /// Whether `CreateStore` has happened.
    pub fn is_created(&self) -> bool {
        self.created
    }

    /// Whether the store refuses orders from `customer_id`.
    pub fn is_customer_blocked(&self, customer_id: AccountId) -> bool {
        self.blocked_customers.contains(&customer_id)
    }

    /// The role `account_id` holds in this store, if any.
    pub fn role_of(&self, account_id: AccountId) -> Option<StoreRole> {
        self.staff.get(&account_id).copied()
    }

    /// The store's currency (`None` before creation).
    pub fn currency(&self) -> Option<Currency> {
        self.currency
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// IANA time zone name.
    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    pub fn payment_instructions(&self) -> &str {
        &self.payment_instructions
    }

    pub fn reservation_ttl_minutes(&self) -> u32 {
        self.reservation_ttl_minutes
    }

    pub fn default_low_stock_threshold(&self) -> u32 {
        self.default_low_stock_threshold
    }

    /// Every staff member and their role, ordered by account id.
    pub fn staff(&self) -> &BTreeMap<AccountId, StoreRole> {
        &self.staff
    }

    /// How many accounts hold the `Owner` role.
    pub fn owner_count(&self) -> usize {
        self.staff
            .values()
            .filter(|role| **role == StoreRole::Owner)
            .count()
    }
}

/// What can be asked of a store.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreCommand {
    CreateStore {
        store_id: StoreId,
        owner_id: AccountId,
        name: StoreName,
        currency: Currency,
        timezone: TimeZone,
        payment_instructions: String,
        default_low_stock_threshold: u32,
        reservation_ttl_minutes: u32,
        at: DateTime<Utc>,
    },
    /// `None` leaves a setting unchanged. `currency` never changes: it may only restate the
    /// store's own (an API client sending the whole store back), anything else is refused.
    ChangeSettings {
        name: Option<StoreName>,
        currency: Option<Currency>,
        timezone: Option<TimeZone>,
        payment_instructions: Option<String>,
        default_low_stock_threshold: Option<u32>,
        reservation_ttl_minutes: Option<u32>,
        changed_by: AccountId,
        at: DateTime<Utc>,
    },
    AssignStaffRole {
        account_id: AccountId,
        role: StoreRole,
        assigned_by: AccountId,
        at: DateTime<Utc>,
    },
    RevokeStaffRole {
        account_id: AccountId,
        revoked_by: AccountId,
        at: DateTime<Utc>,
    },
    /// Stop taking orders from a customer (this store only).
    BlockCustomer {
        customer_id: AccountId,
        blocked_by: AccountId,
        reason: String,
        at: DateTime<Utc>,
    },
    UnblockCustomer {
        customer_id: AccountId,
        unblocked_by: AccountId,
        at: DateTime<Utc>,
    },
}

/// What happened to a store.
/// Stored as `{"VariantName": {...}}`; the variant name is the event type (`strum`
/// derives it, so the two cannot drift apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum StoreEvent {
    StoreCreated {
        store_id: StoreId,
        owner_id: AccountId,
        name: String,
        currency: Currency,
        timezone: String,
        payment_instructions: String,
        default_low_stock_threshold: u32,
        reservation_ttl_minutes: u32,
        created_at: DateTime<Utc>,
    },
    /// Only the settings that changed are `Some`.
    StoreSettingsChanged {
        name: Option<String>,
        timezone: Option<String>,
        payment_instructions: Option<String>,
        default_low_stock_threshold: Option<u32>,
        /// Set iff `default_low_stock_threshold` is set.
        previous_default_low_stock_threshold: Option<u32>,
        reservation_ttl_minutes: Option<u32>,
        changed_by: AccountId,
        at: DateTime<Utc>,
    },
    StaffRoleAssigned {
        account_id: AccountId,
        role: StoreRole,
        previous_role: Option<StoreRole>,
        assigned_by: AccountId,
        at: DateTime<Utc>,
    },
    StaffRoleRevoked {
        account_id: AccountId,
        previous_role: StoreRole,
        revoked_by: AccountId,
        at: DateTime<Utc>,
    },
    CustomerBlocked {
        customer_id: AccountId,
        blocked_by: AccountId,
        reason: String,
        at: DateTime<Utc>,
    },
    CustomerUnblocked {
        customer_id: AccountId,
        unblocked_by: AccountId,
        at: DateTime<Utc>,
    },
}

/// Why a store command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("store not found")]
    NotFound,
    #[error("the store already exists")]
    AlreadyExists,
    #[error("the store name must be 1 to 200 characters")]
    InvalidName,
    #[error("'{0}' is not an IANA time zone name (for example Europe/Moscow)")]
    InvalidTimezone(String),
    #[error("payment instructions must be 1 to 2000 characters")]
    InvalidPaymentInstructions,
    #[error("the reservation time must be between 5 and 43200 minutes, got {0}")]
    InvalidReservationTtl(u32),
    #[error("the default low-stock threshold must be at most 1000000, got {0}")]
    InvalidLowStockThreshold(u32),
    #[error("the account is not on this store's staff")]
    NotStaff,
    #[error("a store must keep at least one owner; assign another owner first")]
    LastOwner,
    #[error("the customer is already blocked in this store")]
    CustomerAlreadyBlocked,
    #[error("the customer is not blocked in this store")]
    CustomerNotBlocked,
    #[error("a store's currency is fixed at creation")]
    CurrencyImmutable,
    #[error("this store does not take orders from this customer")]
    CustomerBlocked,
    #[error("a block needs a reason of 1 to 2000 characters")]
    InvalidBlockReason,
}

/// A store's name: trimmed, 1 to `MAX_STORE_NAME_LEN` characters. Parsed where input enters
/// (an adapter, the CLI), so a command can only carry a valid one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StoreName(String);

impl StoreName {
    pub fn parse(name: &str) -> Result<Self, StoreError> {
        non_empty_text(name, MAX_STORE_NAME_LEN)
            .map(StoreName)
            .ok_or(StoreError::InvalidName)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StoreName {
    type Error = StoreError;
    fn try_from(name: String) -> Result<Self, StoreError> {
        Self::parse(&name)
    }
}

impl From<StoreName> for String {
    fn from(name: StoreName) -> String {
        name.0
    }
}

/// An IANA time zone (`Europe/Moscow`), kept by its canonical name: a store's local days
/// (analytics, deadlines shown to customers) are counted in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    pub fn parse(name: &str) -> Result<Self, StoreError> {
        chrono_tz::Tz::from_str(name.trim())
            .map(TimeZone)
            .map_err(|_| StoreError::InvalidTimezone(name.to_owned()))
    }

    /// The canonical IANA name.
    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl TryFrom<String> for TimeZone {
    type Error = StoreError;
    fn try_from(name: String) -> Result<Self, StoreError> {
        Self::parse(&name)
    }
}

impl From<TimeZone> for String {
    fn from(zone: TimeZone) -> String {
        zone.name().to_owned()
    }
}

fn valid_payment_instructions(text: &str) -> Result<String, StoreError> {
    non_empty_text(text, MAX_TEXT_LEN).ok_or(StoreError::InvalidPaymentInstructions)
}

fn valid_ttl(minutes: u32) -> Result<u32, StoreError> {
    if (MIN_RESERVATION_TTL_MINUTES..=MAX_RESERVATION_TTL_MINUTES).contains(&minutes) {
        Ok(minutes)
    } else {
        Err(StoreError::InvalidReservationTtl(minutes))
    }
}

fn valid_threshold(threshold: u32) -> Result<u32, StoreError> {
    if threshold <= MAX_LOW_STOCK_THRESHOLD {
        Ok(threshold)
    } else {
        Err(StoreError::InvalidLowStockThreshold(threshold))
    }
}

/// `Some(new)` if `new` is given and differs from `current`.
fn changed<T: PartialEq>(new: Option<T>, current: &T) -> Option<T> {
    new.filter(|value| value != current)
}

impl Aggregate for Store {
    const TYPE: &'static str = "Store";
    type Command = StoreCommand;
    type Event = StoreEvent;
    type Error = StoreError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            StoreCommand::CreateStore {
                store_id,
                owner_id,
                name,
                currency,
                timezone,
                payment_instructions,
                default_low_stock_threshold,
                reservation_ttl_minutes,
                at,
            } => {
                if self.created {
                    return Err(StoreError::AlreadyExists);
                }
                let created = StoreEvent::StoreCreated {
                    store_id,
                    owner_id,
                    name: name.into(),
                    currency,
                    timezone: timezone.into(),
                    payment_instructions: valid_payment_instructions(&payment_instructions)?,
                    default_low_stock_threshold: valid_threshold(default_low_stock_threshold)?,
                    reservation_ttl_minutes: valid_ttl(reservation_ttl_minutes)?,
                    created_at: at,
                };
                sink.write(created, self).await;
                let owner = StoreEvent::StaffRoleAssigned {
                    account_id: owner_id,
                    role: StoreRole::Owner,
                    previous_role: None,
                    assigned_by: owner_id,
                    at,
                };
                sink.write(owner, self).await;
                Ok(())
            }
            StoreCommand::ChangeSettings {
                name,
                currency,
                timezone,
                payment_instructions,
                default_low_stock_threshold,
                reservation_ttl_minutes,
                changed_by,
                at,
            } => {
                if !self.created {
                    return Err(StoreError::NotFound);
                }
                if currency.is_some_and(|c| Some(c) != self.currency) {
                    return Err(StoreError::CurrencyImmutable);
                }
                let name = name.map(String::from);
                let timezone = timezone.map(String::from);
                let payment_instructions = payment_instructions
                    .as_deref()
                    .map(valid_payment_instructions)
                    .transpose()?;
                let threshold = default_low_stock_threshold
                    .map(valid_threshold)
                    .transpose()?;
                let ttl = reservation_ttl_minutes.map(valid_ttl).transpose()?;

                let name = changed(name, &self.name);
                let timezone = changed(timezone, &self.timezone);
                let payment_instructions =
                    changed(payment_instructions, &self.payment_instructions);
                let threshold = changed(threshold, &self.default_low_stock_threshold);
                let ttl = changed(ttl, &self.reservation_ttl_minutes);

                if name.is_none()
                    && timezone.is_none()
                    && payment_instructions.is_none()
                    && threshold.is_none()
                    && ttl.is_none()
                {
                    return Ok(());
                }
                let event = StoreEvent::StoreSettingsChanged {
                    name,
                    timezone,
                    payment_instructions,
                    default_low_stock_threshold: threshold,
                    previous_default_low_stock_threshold: threshold
                        .map(|_| self.default_low_stock_threshold),
                    reservation_ttl_minutes: ttl,
                    changed_by,
                    at,
                };
                sink.write(event, self).await;
                Ok(())
            }
            StoreCommand::AssignStaffRole {
                account_id,
                role,
                assigned_by,
                at,
            } => {
                if !self.created {
                    return Err(StoreError::NotFound);
                }
                let previous_role = self.role_of(account_id);
                if previous_role == Some(role) {
                    return Ok(());
                }
                if previous_role == Some(StoreRole::Owner) && self.owner_count() <= 1 {
                    return Err(StoreError::LastOwner);
                }
                let event = StoreEvent::StaffRoleAssigned {
                    account_id,
                    role,
                    previous_role,
                    assigned_by,
                    at,
                };
                sink.write(event, self).await;
                Ok(())
            }
            StoreCommand::RevokeStaffRole {
                account_id,
                revoked_by,
                at,
            } => {
                if !self.created {
                    return Err(StoreError::NotFound);
                }
                let previous_role = self.role_of(account_id).ok_or(StoreError::NotStaff)?;
                if previous_role == StoreRole::Owner && self.owner_count() <= 1 {
                    return Err(StoreError::LastOwner);
                }
                let event = StoreEvent::StaffRoleRevoked {
                    account_id,
                    previous_role,
                    revoked_by,
                    at,
                };
                sink.write(event, self).await;
                Ok(())
            }
            StoreCommand::BlockCustomer {
                customer_id,
                blocked_by,
                reason,
                at,
            } => {
                if !self.created {
                    return Err(StoreError::NotFound);
                }
                let reason =
                    non_empty_text(&reason, MAX_TEXT_LEN).ok_or(StoreError::InvalidBlockReason)?;
                if self.is_customer_blocked(customer_id) {
                    return Err(StoreError::CustomerAlreadyBlocked);
                }
                let event = StoreEvent::CustomerBlocked {
                    customer_id,
                    blocked_by,
                    reason,
                    at,
                };
                sink.write(event, self).await;
                Ok(())
            }
            StoreCommand::UnblockCustomer {
                customer_id,
                unblocked_by,
                at,
            } => {
                if !self.created {
                    return Err(StoreError::NotFound);
                }
                if !self.is_customer_blocked(customer_id) {
                    return Err(StoreError::CustomerNotBlocked);
                }
                let event = StoreEvent::CustomerUnblocked {
                    customer_id,
                    unblocked_by,
                    at,
                };
                sink.write(event, self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            StoreEvent::StoreCreated {
                store_id,
                owner_id: _,
                name,
                currency,
                timezone,
                payment_instructions,
                default_low_stock_threshold,
                reservation_ttl_minutes,
                created_at,
            } => {
                self.created_at = Some(created_at);
                self.updated_at = Some(created_at);
                self.store_id = store_id;
                self.created = true;
                self.name = name;
                self.currency = Some(currency);
                self.timezone = timezone;
                self.payment_instructions = payment_instructions;
                self.default_low_stock_threshold = default_low_stock_threshold;
                self.reservation_ttl_minutes = reservation_ttl_minutes;
            }
            StoreEvent::StoreSettingsChanged {
                name,
                timezone,
                payment_instructions,
                default_low_stock_threshold,
                previous_default_low_stock_threshold: _,
                reservation_ttl_minutes,
                changed_by: _,
                at,
            } => {
                self.updated_at = Some(at);
                if let Some(name) = name {
                    self.name = name;
                }
                if let Some(timezone) = timezone {
                    self.timezone = timezone;
                }
                if let Some(text) = payment_instructions {
                    self.payment_instructions = text;
                }
                if let Some(threshold) = default_low_stock_threshold {
                    self.default_low_stock_threshold = threshold;
                }
                if let Some(ttl) = reservation_ttl_minutes {
                    self.reservation_ttl_minutes = ttl;
                }
            }
            StoreEvent::StaffRoleAssigned {
                account_id, role, ..
            } => {
                self.staff.insert(account_id, role);
            }
            StoreEvent::StaffRoleRevoked { account_id, .. } => {
                self.staff.remove(&account_id);
            }
            StoreEvent::CustomerBlocked { customer_id, .. } => {
                self.blocked_customers.insert(customer_id);
            }
            StoreEvent::CustomerUnblocked { customer_id, .. } => {
                self.blocked_customers.remove(&customer_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent as _;
    use uuid::Uuid;

    type StoreTest = TestFramework<Store>;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    fn store_id() -> StoreId {
        StoreId(Uuid::from_u128(1))
    }

    fn owner() -> AccountId {
        AccountId(Uuid::from_u128(10))
    }

    fn alice() -> AccountId {
        AccountId(Uuid::from_u128(11))
    }

    fn bob() -> AccountId {
        AccountId(Uuid::from_u128(12))
    }

    fn rub() -> Currency {
        "RUB".parse().unwrap()
    }

    #[test]
    fn a_store_name_is_trimmed_and_between_1_and_200_characters() {
        assert_eq!(
            StoreName::parse("  Tea House ").unwrap().as_str(),
            "Tea House"
        );
        assert_eq!(StoreName::parse("   "), Err(StoreError::InvalidName));
        assert_eq!(
            StoreName::parse(&"x".repeat(201)),
            Err(StoreError::InvalidName)
        );
        assert!(StoreName::parse(&"x".repeat(200)).is_ok());
    }

    #[test]
    fn a_time_zone_is_an_iana_name_kept_canonical() {
        assert_eq!(
            TimeZone::parse(" Asia/Tokyo ").unwrap().name(),
            "Asia/Tokyo"
        );
        assert_eq!(
            TimeZone::parse("Mars/Olympus"),
            Err(StoreError::InvalidTimezone("Mars/Olympus".into()))
        );
        assert_eq!(
            TimeZone::parse("MSK+3"),
            Err(StoreError::InvalidTimezone("MSK+3".into()))
        );
        // Stored by name: the JSON of a command or state reads back the same zone.
        let zone = TimeZone::parse("Europe/Moscow").unwrap();
        let json = serde_json::to_value(zone).unwrap();
        assert_eq!(json, "Europe/Moscow");
        assert_eq!(serde_json::from_value::<TimeZone>(json).unwrap(), zone);
        assert!(serde_json::from_value::<StoreName>(serde_json::json!(" ")).is_err());
    }

    fn create() -> StoreCommand {
        StoreCommand::CreateStore {
            store_id: store_id(),
            owner_id: owner(),
            name: StoreName::parse("  Tea House ").unwrap(),
            currency: rub(),
            timezone: TimeZone::parse("Europe/Moscow").unwrap(),
            payment_instructions: "IBAN RU00 0000".into(),
            default_low_stock_threshold: 5,
            reservation_ttl_minutes: 60,
            at: at(),
        }
    }

    fn created() -> StoreEvent {
        StoreEvent::StoreCreated {
            store_id: store_id(),
            owner_id: owner(),
            name: "Tea House".into(),
            currency: rub(),
            timezone: "Europe/Moscow".into(),
            payment_instructions: "IBAN RU00 0000".into(),
            default_low_stock_threshold: 5,
            reservation_ttl_minutes: 60,
            created_at: at(),
        }
    }

    fn assigned(account_id: AccountId, role: StoreRole, previous: Option<StoreRole>) -> StoreEvent {
        StoreEvent::StaffRoleAssigned {
            account_id,
            role,
            previous_role: previous,
            assigned_by: owner(),
            at: at(),
        }
    }

    fn existing() -> Vec<StoreEvent> {
        vec![created(), assigned(owner(), StoreRole::Owner, None)]
    }

    fn no_changes() -> StoreCommand {
        StoreCommand::ChangeSettings {
            name: None,
            currency: None,
            timezone: None,
            payment_instructions: None,
            default_low_stock_threshold: None,
            reservation_ttl_minutes: None,
            changed_by: owner(),
            at: at(),
        }
    }

    fn with_changes(edit: impl FnOnce(&mut StoreCommand)) -> StoreCommand {
        let mut command = no_changes();
        edit(&mut command);
        command
    }

    fn create_with(edit: impl FnOnce(&mut StoreCommand)) -> StoreCommand {
        let mut command = create();
        edit(&mut command);
        command
    }

    #[test]
    fn creating_a_store_records_it_and_makes_the_creator_its_owner() {
        StoreTest::with(())
            .given_no_previous_events()
            .when(create())
            .then_expect_events(existing());
    }

    #[test]
    fn creating_a_store_twice_is_refused() {
        StoreTest::with(())
            .given(existing())
            .when(create())
            .then_expect_error(StoreError::AlreadyExists);
    }

    #[test]
    fn creating_a_store_without_payment_instructions_is_refused() {
        StoreTest::with(())
            .given_no_previous_events()
            .when(create_with(|c| {
                if let StoreCommand::CreateStore {
                    payment_instructions,
                    ..
                } = c
                {
                    *payment_instructions = String::new();
                }
            }))
            .then_expect_error(StoreError::InvalidPaymentInstructions);
    }

    #[test]
    fn creating_a_store_with_a_reservation_ttl_under_5_minutes_is_refused() {
        StoreTest::with(())
            .given_no_previous_events()
            .when(create_with(|c| {
                if let StoreCommand::CreateStore {
                    reservation_ttl_minutes,
                    ..
                } = c
                {
                    *reservation_ttl_minutes = 4;
                }
            }))
            .then_expect_error(StoreError::InvalidReservationTtl(4));
    }

    #[test]
    fn creating_a_store_with_a_reservation_ttl_over_30_days_is_refused() {
        StoreTest::with(())
            .given_no_previous_events()
            .when(create_with(|c| {
                if let StoreCommand::CreateStore {
                    reservation_ttl_minutes,
                    ..
                } = c
                {
                    *reservation_ttl_minutes = 43_201;
                }
            }))
            .then_expect_error(StoreError::InvalidReservationTtl(43_201));
    }

    #[test]
    fn creating_a_store_with_a_low_stock_threshold_over_a_million_is_refused() {
        StoreTest::with(())
            .given_no_previous_events()
            .when(create_with(|c| {
                if let StoreCommand::CreateStore {
                    default_low_stock_threshold,
                    ..
                } = c
                {
                    *default_low_stock_threshold = 1_000_001;
                }
            }))
            .then_expect_error(StoreError::InvalidLowStockThreshold(1_000_001));
    }

    #[test]
    fn the_reservation_ttl_bounds_are_inclusive() {
        for ttl in [5, 43_200] {
            let events = StoreTest::with(())
                .given_no_previous_events()
                .when(create_with(|c| {
                    if let StoreCommand::CreateStore {
                        reservation_ttl_minutes,
                        ..
                    } = c
                    {
                        *reservation_ttl_minutes = ttl;
                    }
                }))
                .inspect_result()
                .unwrap();
            assert_eq!(events.len(), 2);
        }
    }

    #[test]
    fn changing_settings_records_only_the_settings_that_change() {
        StoreTest::with(())
            .given(existing())
            .when(StoreCommand::ChangeSettings {
                name: Some(StoreName::parse("Tea House").unwrap()),
                currency: Some(rub()),
                timezone: Some(TimeZone::parse(" Asia/Tokyo ").unwrap()),
                payment_instructions: Some("IBAN RU11 1111".into()),
                default_low_stock_threshold: Some(10),
                reservation_ttl_minutes: Some(120),
                changed_by: alice(),
                at: at(),
            })
            .then_expect_events(vec![StoreEvent::StoreSettingsChanged {
                name: None,
                timezone: Some("Asia/Tokyo".into()),
                payment_instructions: Some("IBAN RU11 1111".into()),
                default_low_stock_threshold: Some(10),
                previous_default_low_stock_threshold: Some(5),
                reservation_ttl_minutes: Some(120),
                changed_by: alice(),
                at: at(),
            }]);
    }

    #[test]
    fn changing_only_the_name_leaves_the_previous_threshold_unset() {
        StoreTest::with(())
            .given(existing())
            .when(with_changes(|c| {
                if let StoreCommand::ChangeSettings {
                    name,
                    default_low_stock_threshold,
                    ..
                } = c
                {
                    *name = Some(StoreName::parse("Coffee House").unwrap());
                    *default_low_stock_threshold = Some(5);
                }
            }))
            .then_expect_events(vec![StoreEvent::StoreSettingsChanged {
                name: Some("Coffee House".into()),
                timezone: None,
                payment_instructions: None,
                default_low_stock_threshold: None,
                previous_default_low_stock_threshold: None,
                reservation_ttl_minutes: None,
                changed_by: owner(),
                at: at(),
            }]);
    }

    #[test]
    fn changing_settings_to_their_current_values_records_nothing() {
        StoreTest::with(())
            .given(existing())
            .when(StoreCommand::ChangeSettings {
                name: Some(StoreName::parse(" Tea House").unwrap()),
                currency: Some(rub()),
                timezone: Some(TimeZone::parse("Europe/Moscow").unwrap()),
                payment_instructions: Some("IBAN RU00 0000".into()),
                default_low_stock_threshold: Some(5),
                reservation_ttl_minutes: Some(60),
                changed_by: owner(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_currency_never_changes() {
        StoreTest::with(())
            .given(existing())
            .when(with_changes(|c| {
                if let StoreCommand::ChangeSettings { currency, .. } = c {
                    *currency = Some("EUR".parse().expect("EUR"));
                }
            }))
            .then_expect_error(StoreError::CurrencyImmutable);
    }

    #[test]
    fn changing_no_settings_records_nothing() {
        StoreTest::with(())
            .given(existing())
            .when(no_changes())
            .then_expect_events(vec![]);
    }

    #[test]
    fn changing_settings_of_a_missing_store_is_refused() {
        StoreTest::with(())
            .given_no_previous_events()
            .when(no_changes())
            .then_expect_error(StoreError::NotFound);
    }

    #[test]
    fn changing_payment_instructions_to_blank_is_refused() {
        StoreTest::with(())
            .given(existing())
            .when(with_changes(|c| {
                if let StoreCommand::ChangeSettings {
                    payment_instructions,
                    ..
                } = c
                {
                    *payment_instructions = Some("x".repeat(MAX_TEXT_LEN + 1));
                }
            }))
            .then_expect_error(StoreError::InvalidPaymentInstructions);
    }

    #[test]
    fn changing_the_reservation_ttl_out_of_range_is_refused() {
        StoreTest::with(())
            .given(existing())
            .when(with_changes(|c| {
                if let StoreCommand::ChangeSettings {
                    reservation_ttl_minutes,
                    ..
                } = c
                {
                    *reservation_ttl_minutes = Some(0);
                }
            }))
            .then_expect_error(StoreError::InvalidReservationTtl(0));
    }

    #[test]
    fn changing_the_low_stock_threshold_over_a_million_is_refused() {
        StoreTest::with(())
            .given(existing())
            .when(with_changes(|c| {
                if let StoreCommand::ChangeSettings {
                    default_low_stock_threshold,
                    ..
                } = c
                {
                    *default_low_stock_threshold = Some(u32::MAX);
                }
            }))
            .then_expect_error(StoreError::InvalidLowStockThreshold(u32::MAX));
    }

    #[test]
    fn assigning_a_role_to_a_newcomer_records_it_without_a_previous_role() {
        StoreTest::with(())
            .given(existing())
            .when(StoreCommand::AssignStaffRole {
                account_id: alice(),
                role: StoreRole::Vendor,
                assigned_by: owner(),
                at: at(),
            })
            .then_expect_events(vec![assigned(alice(), StoreRole::Vendor, None)]);
    }

    #[test]
    fn changing_a_staff_members_role_records_the_previous_role() {
        let mut given = existing();
        given.push(assigned(alice(), StoreRole::Vendor, None));
        StoreTest::with(())
            .given(given)
            .when(StoreCommand::AssignStaffRole {
                account_id: alice(),
                role: StoreRole::Admin,
                assigned_by: owner(),
                at: at(),
            })
            .then_expect_events(vec![assigned(
                alice(),
                StoreRole::Admin,
                Some(StoreRole::Vendor),
            )]);
    }

    #[test]
    fn assigning_the_role_already_held_records_nothing() {
        let mut given = existing();
        given.push(assigned(alice(), StoreRole::Auditor, None));
        StoreTest::with(())
            .given(given)
            .when(StoreCommand::AssignStaffRole {
                account_id: alice(),
                role: StoreRole::Auditor,
                assigned_by: owner(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn demoting_an_owner_is_allowed_while_another_owner_remains() {
        let mut given = existing();
        given.push(assigned(alice(), StoreRole::Owner, None));
        StoreTest::with(())
            .given(given)
            .when(StoreCommand::AssignStaffRole {
                account_id: owner(),
                role: StoreRole::Admin,
                assigned_by: alice(),
                at: at(),
            })
            .then_expect_events(vec![StoreEvent::StaffRoleAssigned {
                account_id: owner(),
                role: StoreRole::Admin,
                previous_role: Some(StoreRole::Owner),
                assigned_by: alice(),
                at: at(),
            }]);
    }

    #[test]
    fn demoting_the_last_owner_is_refused() {
        StoreTest::with(())
            .given(existing())
            .when(StoreCommand::AssignStaffRole {
                account_id: owner(),
                role: StoreRole::Admin,
                assigned_by: owner(),
                at: at(),
            })
            .then_expect_error(StoreError::LastOwner);
    }

    #[test]
    fn assigning_a_role_in_a_missing_store_is_refused() {
        StoreTest::with(())
            .given_no_previous_events()
            .when(StoreCommand::AssignStaffRole {
                account_id: alice(),
                role: StoreRole::Admin,
                assigned_by: owner(),
                at: at(),
            })
            .then_expect_error(StoreError::NotFound);
    }

    fn blocked(customer_id: AccountId) -> StoreEvent {
        StoreEvent::CustomerBlocked {
            customer_id,
            blocked_by: owner(),
            reason: "fake receipts".into(),
            at: at(),
        }
    }

    fn block(customer_id: AccountId, reason: &str) -> StoreCommand {
        StoreCommand::BlockCustomer {
            customer_id,
            blocked_by: owner(),
            reason: reason.into(),
            at: at(),
        }
    }

    #[test]
    fn blocking_a_customer_records_who_and_why() {
        StoreTest::with(())
            .given(existing())
            .when(block(alice(), " fake receipts "))
            .then_expect_events(vec![blocked(alice())]);
    }

    #[test]
    fn blocking_a_customer_twice_is_refused() {
        let mut given = existing();
        given.push(blocked(alice()));
        StoreTest::with(())
            .given(given)
            .when(block(alice(), "again"))
            .then_expect_error(StoreError::CustomerAlreadyBlocked);
    }

    #[test]
    fn blocking_without_a_reason_is_refused() {
        StoreTest::with(())
            .given(existing())
            .when(block(alice(), "  "))
            .then_expect_error(StoreError::InvalidBlockReason);
    }

    #[test]
    fn unblocking_a_blocked_customer_records_it() {
        let mut given = existing();
        given.push(blocked(alice()));
        StoreTest::with(())
            .given(given)
            .when(StoreCommand::UnblockCustomer {
                customer_id: alice(),
                unblocked_by: owner(),
                at: at(),
            })
            .then_expect_events(vec![StoreEvent::CustomerUnblocked {
                customer_id: alice(),
                unblocked_by: owner(),
                at: at(),
            }]);
    }

    #[test]
    fn unblocking_a_customer_who_is_not_blocked_is_refused() {
        StoreTest::with(())
            .given(existing())
            .when(StoreCommand::UnblockCustomer {
                customer_id: alice(),
                unblocked_by: owner(),
                at: at(),
            })
            .then_expect_error(StoreError::CustomerNotBlocked);
    }

    #[test]
    fn blocking_in_a_store_that_does_not_exist_is_refused() {
        StoreTest::with(())
            .given_no_previous_events()
            .when(block(alice(), "x"))
            .then_expect_error(StoreError::NotFound);
    }

    #[test]
    fn revoking_a_staff_role_records_the_previous_role() {
        let mut given = existing();
        given.push(assigned(alice(), StoreRole::Admin, None));
        StoreTest::with(())
            .given(given)
            .when(StoreCommand::RevokeStaffRole {
                account_id: alice(),
                revoked_by: owner(),
                at: at(),
            })
            .then_expect_events(vec![StoreEvent::StaffRoleRevoked {
                account_id: alice(),
                previous_role: StoreRole::Admin,
                revoked_by: owner(),
                at: at(),
            }]);
    }

    #[test]
    fn revoking_an_owner_is_allowed_while_another_owner_remains() {
        let mut given = existing();
        given.push(assigned(alice(), StoreRole::Owner, None));
        StoreTest::with(())
            .given(given)
            .when(StoreCommand::RevokeStaffRole {
                account_id: owner(),
                revoked_by: alice(),
                at: at(),
            })
            .then_expect_events(vec![StoreEvent::StaffRoleRevoked {
                account_id: owner(),
                previous_role: StoreRole::Owner,
                revoked_by: alice(),
                at: at(),
            }]);
    }

    #[test]
    fn revoking_the_last_owner_is_refused() {
        let mut given = existing();
        given.push(assigned(alice(), StoreRole::Admin, None));
        StoreTest::with(())
            .given(given)
            .when(StoreCommand::RevokeStaffRole {
                account_id: owner(),
                revoked_by: alice(),
                at: at(),
            })
            .then_expect_error(StoreError::LastOwner);
    }

    #[test]
    fn revoking_someone_who_is_not_staff_is_refused() {
        StoreTest::with(())
            .given(existing())
            .when(StoreCommand::RevokeStaffRole {
                account_id: bob(),
                revoked_by: owner(),
                at: at(),
            })
            .then_expect_error(StoreError::NotStaff);
    }

    #[test]
    fn revoking_a_role_in_a_missing_store_is_refused() {
        StoreTest::with(())
            .given_no_previous_events()
            .when(StoreCommand::RevokeStaffRole {
                account_id: alice(),
                revoked_by: owner(),
                at: at(),
            })
            .then_expect_error(StoreError::NotFound);
    }

    #[test]
    fn state_reflects_creation_settings_and_staff() {
        let mut store = Store::default();
        assert!(!store.is_created());
        for event in existing() {
            store.apply(event);
        }
        store.apply(assigned(alice(), StoreRole::Vendor, None));
        store.apply(StoreEvent::StoreSettingsChanged {
            name: None,
            timezone: Some("Asia/Tokyo".into()),
            payment_instructions: None,
            default_low_stock_threshold: Some(7),
            previous_default_low_stock_threshold: Some(5),
            reservation_ttl_minutes: Some(15),
            changed_by: owner(),
            at: at(),
        });
        assert!(store.is_created());
        assert_eq!(store.currency(), Some(rub()));
        assert_eq!(store.name(), "Tea House");
        assert_eq!(store.timezone(), "Asia/Tokyo");
        assert_eq!(store.payment_instructions(), "IBAN RU00 0000");
        assert_eq!(store.default_low_stock_threshold(), 7);
        assert_eq!(store.reservation_ttl_minutes(), 15);
        assert_eq!(store.role_of(owner()), Some(StoreRole::Owner));
        assert_eq!(store.role_of(alice()), Some(StoreRole::Vendor));
        assert_eq!(store.role_of(bob()), None);
        assert_eq!(store.owner_count(), 1);

        store.apply(StoreEvent::StaffRoleRevoked {
            account_id: alice(),
            previous_role: StoreRole::Vendor,
            revoked_by: owner(),
            at: at(),
        });
        assert_eq!(store.role_of(alice()), None);

        let json = serde_json::to_string(&store).unwrap();
        assert_eq!(serde_json::from_str::<Store>(&json).unwrap(), store);
    }

    #[test]
    fn events_serialise_externally_tagged_by_their_variant_name() {
        let event = assigned(alice(), StoreRole::Admin, Some(StoreRole::Vendor));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(event.event_type(), "StaffRoleAssigned");
        assert_eq!(event.event_version(), crate::EVENT_VERSION_1);
        assert_eq!(json["StaffRoleAssigned"]["role"], "ADMIN");
        assert_eq!(json["StaffRoleAssigned"]["previous_role"], "VENDOR");
        assert_eq!(serde_json::from_value::<StoreEvent>(json).unwrap(), event);

        for event in [created(), a_settings_event()] {
            let json = serde_json::to_value(&event).unwrap();
            let object = json.as_object().unwrap();
            assert_eq!(object.len(), 1);
            assert!(object.contains_key(&event.event_type()));
            assert_eq!(serde_json::from_value::<StoreEvent>(json).unwrap(), event);
        }
        let json = serde_json::to_value(created()).unwrap();
        assert_eq!(json["StoreCreated"]["currency"], "RUB");
    }

    fn a_settings_event() -> StoreEvent {
        StoreEvent::StoreSettingsChanged {
            name: Some("n".into()),
            timezone: None,
            payment_instructions: None,
            default_low_stock_threshold: None,
            previous_default_low_stock_threshold: None,
            reservation_ttl_minutes: None,
            changed_by: owner(),
            at: at(),
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_ttl_outside_5_to_43200_minutes_is_refused_and_any_inside_accepted(ttl in any::<u32>()) {
                let result = StoreTest::with(())
                    .given_no_previous_events()
                    .when(create_with(|c| {
                        if let StoreCommand::CreateStore { reservation_ttl_minutes, .. } = c {
                            *reservation_ttl_minutes = ttl;
                        }
                    }))
                    .inspect_result();
                if (5..=43_200).contains(&ttl) {
                    prop_assert!(result.is_ok());
                } else {
                    prop_assert_eq!(result, Err(StoreError::InvalidReservationTtl(ttl)));
                }
            }
        }
    }
}
