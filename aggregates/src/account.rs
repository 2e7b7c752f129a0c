//! The `Account` aggregate: a person known by a Telegram user id and/or an e-mail address.
//!
//! Invariants guarded here:
//! - an account is registered once and always has at least one identity (a Telegram user id or
//!   an e-mail address);
//! - personal data never appears in clear in events: e-mail, display name and Telegram user id
//!   arrive already sealed (`SealedPersonalData`) with this account's own key, so shredding that
//!   key erases them everywhere; credentials and tokens are never part of events;
//! - erasing the account's personal data (`PersonalDataErased`) happens once; afterwards no
//!   personal data can be recorded for it again (no contact change, no Telegram link);
//! - blocking needs a reason and happens once until unblocked; a blocked account cannot link a
//!   Telegram identity or change its second factor (other changes are allowed; log-in is
//!   refused elsewhere);
//! - the Telegram second factor can be turned on only with a linked Telegram user (who else
//!   would approve the logins?); its changes are recorded, the setting itself is kept with the
//!   credentials, outside events;
//! - platform-admin grants and revocations are recorded only when they change something.
//!
//! An account's roles per store are *not* held here: the `Store` aggregate holds them
//! (`StaffRoleAssigned` / `StaffRoleRevoked`) and is the single authority for the "a store
//! always keeps an owner" invariant. An account's roles are a read model of those events.
//! What the aggregate cannot see through the seal is the application layer's to check before it
//! seals: a Telegram user id is positive, belongs to one account only (`telegram_identities`),
//! and `LinkTelegram` is sent only when it differs from the linked one.
//!
//! `AccountRegistered` and `TelegramLinked` are at event version 2.0 (the Telegram user id
//! sealed); version 1.0 carried it in clear and is read through `crate::upcast`.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::values::{
    non_empty_text, AccountId, Channel, SealedPersonalData, TelegramId, MAX_TEXT_LEN,
};

/// State of one account, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub account_id: AccountId,
    pub registered: bool,
    /// The linked Telegram user (sealed; in clear only from events of version 1.0).
    pub telegram_user: Option<TelegramId>,
    pub email: Option<SealedPersonalData>,
    pub display_name: Option<SealedPersonalData>,
    pub platform_admin: bool,
    pub blocked: bool,
    /// The person's data was erased: none is held or accepted any more.
    #[serde(default)]
    pub erased: bool,
}

impl Account {
    /// Whether `Register` has happened.
    pub fn is_created(&self) -> bool {
        self.registered
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    pub fn is_platform_admin(&self) -> bool {
        self.platform_admin
    }

    pub fn is_erased(&self) -> bool {
        self.erased
    }

    pub fn telegram_user(&self) -> Option<&TelegramId> {
        self.telegram_user.as_ref()
    }

    pub fn email(&self) -> Option<&SealedPersonalData> {
        self.email.as_ref()
    }

    pub fn display_name(&self) -> Option<&SealedPersonalData> {
        self.display_name.as_ref()
    }
}

/// What can be asked of an account.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    Register {
        account_id: AccountId,
        /// The Telegram user id, sealed with this account's key.
        telegram_user: Option<SealedPersonalData>,
        email: Option<SealedPersonalData>,
        display_name: Option<SealedPersonalData>,
        platform_admin: bool,
        channel: Channel,
        at: DateTime<Utc>,
    },
    /// Links a (new) Telegram user, sealed with this account's key. Sent only when the id
    /// differs from the linked one: sealed values cannot be compared here.
    LinkTelegram {
        telegram_user: SealedPersonalData,
        at: DateTime<Utc>,
    },
    /// `None` leaves a detail unchanged.
    ChangeContact {
        email: Option<SealedPersonalData>,
        display_name: Option<SealedPersonalData>,
        at: DateTime<Utc>,
    },
    /// Forget the person: their sealed data is dropped from the state and read models, and
    /// (with their key deleted by the application layer) unreadable in the log.
    ErasePersonalData { at: DateTime<Utc> },
    Block {
        blocked_by: AccountId,
        reason: String,
        at: DateTime<Utc>,
    },
    Unblock {
        unblocked_by: AccountId,
        at: DateTime<Utc>,
    },
    GrantPlatformAdmin {
        granted_by: AccountId,
        at: DateTime<Utc>,
    },
    RevokePlatformAdmin {
        revoked_by: AccountId,
        at: DateTime<Utc>,
    },
    /// Turn the Telegram second factor on or off. The application layer issues it only for a
    /// real change (it keeps the setting), after the session re-authenticated.
    ChangeSecondFactor { enabled: bool, at: DateTime<Utc> },
}

/// What happened to an account.
/// Stored as `{"VariantName": {...}}`; the variant name is the event type (`strum`
/// derives it, so the two cannot drift apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum AccountEvent {
    /// Version 2.0 (1.0 had `telegram_user_id: i64?` in clear).
    AccountRegistered {
        account_id: AccountId,
        telegram_user: Option<TelegramId>,
        email: Option<SealedPersonalData>,
        display_name: Option<SealedPersonalData>,
        platform_admin: bool,
        channel: Channel,
        registered_at: DateTime<Utc>,
    },
    /// Version 2.0 (1.0 had `telegram_user_id: i64` and `previous_telegram_user_id: i64?` in
    /// clear).
    TelegramLinked {
        telegram_user: TelegramId,
        /// Whether it replaced another Telegram user linked before.
        relinked: bool,
        at: DateTime<Utc>,
    },
    /// Only the details that changed are `Some`.
    AccountContactChanged {
        email: Option<SealedPersonalData>,
        display_name: Option<SealedPersonalData>,
        at: DateTime<Utc>,
    },
    /// The person's personal data was erased (their key is deleted in the same transaction).
    /// Carries no personal data itself; readers drop everything personal they hold of them.
    PersonalDataErased {
        subject_id: AccountId,
        at: DateTime<Utc>,
    },
    AccountBlocked {
        blocked_by: AccountId,
        reason: String,
        at: DateTime<Utc>,
    },
    AccountUnblocked {
        unblocked_by: AccountId,
        at: DateTime<Utc>,
    },
    PlatformAdminGranted {
        granted_by: AccountId,
        at: DateTime<Utc>,
    },
    PlatformAdminRevoked {
        revoked_by: AccountId,
        at: DateTime<Utc>,
    },
    /// The Telegram second factor was turned on (`enabled`) or off; the account's other
    /// sessions were revoked with it.
    SecondFactorChanged { enabled: bool, at: DateTime<Utc> },
}

impl cqrs_es::DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        <&'static str>::from(self).to_owned()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(Account::TYPE, <&'static str>::from(self)).to_owned()
    }
}

/// Why an account command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("account not found")]
    NotFound,
    #[error("the account already exists")]
    AlreadyExists,
    #[error("an account needs a Telegram user id or an e-mail address")]
    NoIdentity,
    /// Checked by the application layer before it seals the id.
    #[error("'{0}' is not a Telegram user id")]
    InvalidTelegramUserId(i64),
    #[error("personal data must be sealed with the account's own key")]
    ForeignPersonalData,
    #[error("the personal data of this account was erased")]
    Erased,
    #[error("the account is blocked")]
    Blocked,
    #[error("the account is already blocked")]
    AlreadyBlocked,
    #[error("the account is not blocked")]
    NotBlocked,
    #[error("a reason of 1 to 2000 characters is required")]
    ReasonRequired,
    #[error("the Telegram second factor needs a linked Telegram user to approve logins")]
    SecondFactorNeedsTelegram,
}

/// Sealed data must belong to (be sealed with the key of) `account_id`, so that shredding that
/// account's key erases it.
fn own(
    account_id: AccountId,
    sealed: SealedPersonalData,
) -> Result<SealedPersonalData, AccountError> {
    if sealed.subject_id == account_id {
        Ok(sealed)
    } else {
        Err(AccountError::ForeignPersonalData)
    }
}

/// [`own`] for a detail that may be absent.
fn own_data(
    account_id: AccountId,
    data: Option<SealedPersonalData>,
) -> Result<Option<SealedPersonalData>, AccountError> {
    data.map(|sealed| own(account_id, sealed)).transpose()
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if !self.registered && !matches!(command, AccountCommand::Register { .. }) {
            return Err(AccountError::NotFound);
        }
        match command {
            AccountCommand::Register {
                account_id,
                telegram_user,
                email,
                display_name,
                platform_admin,
                channel,
                at,
            } => {
                if self.registered {
                    return Err(AccountError::AlreadyExists);
                }
                if telegram_user.is_none() && email.is_none() {
                    return Err(AccountError::NoIdentity);
                }
                let event = AccountEvent::AccountRegistered {
                    account_id,
                    telegram_user: own_data(account_id, telegram_user)?.map(TelegramId::Sealed),
                    email: own_data(account_id, email)?,
                    display_name: own_data(account_id, display_name)?,
                    platform_admin,
                    channel,
                    registered_at: at,
                };
                sink.write(event, self).await;
            }
            AccountCommand::LinkTelegram { telegram_user, at } => {
                if self.erased {
                    return Err(AccountError::Erased);
                }
                if self.blocked {
                    return Err(AccountError::Blocked);
                }
                let event = AccountEvent::TelegramLinked {
                    telegram_user: TelegramId::Sealed(own(self.account_id, telegram_user)?),
                    relinked: self.telegram_user.is_some(),
                    at,
                };
                sink.write(event, self).await;
            }
            AccountCommand::ChangeContact {
                email,
                display_name,
                at,
            } => {
                if self.erased {
                    return Err(AccountError::Erased);
                }
                let email =
                    own_data(self.account_id, email)?.filter(|e| Some(e) != self.email.as_ref());
                let display_name = own_data(self.account_id, display_name)?
                    .filter(|d| Some(d) != self.display_name.as_ref());
                if email.is_none() && display_name.is_none() {
                    return Ok(());
                }
                let event = AccountEvent::AccountContactChanged {
                    email,
                    display_name,
                    at,
                };
                sink.write(event, self).await;
            }
            AccountCommand::ErasePersonalData { at } => {
                if !self.erased {
                    let event = AccountEvent::PersonalDataErased {
                        subject_id: self.account_id,
                        at,
                    };
                    sink.write(event, self).await;
                }
            }
            AccountCommand::Block {
                blocked_by,
                reason,
                at,
            } => {
                if self.blocked {
                    return Err(AccountError::AlreadyBlocked);
                }
                let reason =
                    non_empty_text(&reason, MAX_TEXT_LEN).ok_or(AccountError::ReasonRequired)?;
                let event = AccountEvent::AccountBlocked {
                    blocked_by,
                    reason,
                    at,
                };
                sink.write(event, self).await;
            }
            AccountCommand::Unblock { unblocked_by, at } => {
                if !self.blocked {
                    return Err(AccountError::NotBlocked);
                }
                sink.write(AccountEvent::AccountUnblocked { unblocked_by, at }, self)
                    .await;
            }
            AccountCommand::GrantPlatformAdmin { granted_by, at } => {
                if !self.platform_admin {
                    sink.write(AccountEvent::PlatformAdminGranted { granted_by, at }, self)
                        .await;
                }
            }
            AccountCommand::RevokePlatformAdmin { revoked_by, at } => {
                if self.platform_admin {
                    sink.write(AccountEvent::PlatformAdminRevoked { revoked_by, at }, self)
                        .await;
                }
            }
            AccountCommand::ChangeSecondFactor { enabled, at } => {
                if self.blocked {
                    return Err(AccountError::Blocked);
                }
                if enabled && self.telegram_user.is_none() {
                    return Err(AccountError::SecondFactorNeedsTelegram);
                }
                sink.write(AccountEvent::SecondFactorChanged { enabled, at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            AccountEvent::AccountRegistered {
                account_id,
                telegram_user,
                email,
                display_name,
                platform_admin,
                channel: _,
                registered_at: _,
            } => {
                self.account_id = account_id;
                self.registered = true;
                self.telegram_user = telegram_user;
                self.email = email;
                self.display_name = display_name;
                self.platform_admin = platform_admin;
            }
            AccountEvent::TelegramLinked { telegram_user, .. } => {
                self.telegram_user = Some(telegram_user);
            }
            AccountEvent::AccountContactChanged {
                email,
                display_name,
                at: _,
            } => {
                if email.is_some() {
                    self.email = email;
                }
                if display_name.is_some() {
                    self.display_name = display_name;
                }
            }
            AccountEvent::PersonalDataErased { .. } => {
                self.erased = true;
                self.telegram_user = None;
                self.email = None;
                self.display_name = None;
            }
            AccountEvent::AccountBlocked { .. } => self.blocked = true,
            AccountEvent::AccountUnblocked { .. } => self.blocked = false,
            AccountEvent::PlatformAdminGranted { .. } => self.platform_admin = true,
            AccountEvent::PlatformAdminRevoked { .. } => self.platform_admin = false,
            // The setting lives with the credentials; the event is the record of the change.
            AccountEvent::SecondFactorChanged { .. } => {}
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

    type AccountTest = TestFramework<Account>;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    fn account_id() -> AccountId {
        AccountId(Uuid::from_u128(30))
    }

    fn admin() -> AccountId {
        AccountId(Uuid::from_u128(31))
    }

    fn sealed(ciphertext: &str) -> SealedPersonalData {
        sealed_for(account_id(), ciphertext)
    }

    fn sealed_for(subject_id: AccountId, ciphertext: &str) -> SealedPersonalData {
        SealedPersonalData {
            subject_id,
            algorithm: "xchacha20poly1305".into(),
            nonce: "bm9uY2U=".into(),
            ciphertext: ciphertext.into(),
        }
    }

    fn register(
        telegram_user: Option<SealedPersonalData>,
        email: Option<SealedPersonalData>,
    ) -> AccountCommand {
        AccountCommand::Register {
            account_id: account_id(),
            telegram_user,
            email,
            display_name: Some(sealed("name")),
            platform_admin: false,
            channel: Channel::Telegram,
            at: at(),
        }
    }

    fn registered() -> AccountEvent {
        AccountEvent::AccountRegistered {
            account_id: account_id(),
            telegram_user: Some(TelegramId::Sealed(sealed("777"))),
            email: None,
            display_name: Some(sealed("name")),
            platform_admin: false,
            channel: Channel::Telegram,
            registered_at: at(),
        }
    }

    fn blocked() -> AccountEvent {
        AccountEvent::AccountBlocked {
            blocked_by: admin(),
            reason: "spam".into(),
            at: at(),
        }
    }

    fn erased() -> AccountEvent {
        AccountEvent::PersonalDataErased {
            subject_id: account_id(),
            at: at(),
        }
    }

    fn admin_granted() -> AccountEvent {
        AccountEvent::PlatformAdminGranted {
            granted_by: admin(),
            at: at(),
        }
    }

    #[test]
    fn registering_by_telegram_records_the_account() {
        AccountTest::with(())
            .given_no_previous_events()
            .when(register(Some(sealed("777")), None))
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn registering_by_email_records_the_account() {
        AccountTest::with(())
            .given_no_previous_events()
            .when(AccountCommand::Register {
                account_id: account_id(),
                telegram_user: None,
                email: Some(sealed("mail")),
                display_name: None,
                platform_admin: true,
                channel: Channel::Api,
                at: at(),
            })
            .then_expect_events(vec![AccountEvent::AccountRegistered {
                account_id: account_id(),
                telegram_user: None,
                email: Some(sealed("mail")),
                display_name: None,
                platform_admin: true,
                channel: Channel::Api,
                registered_at: at(),
            }]);
    }

    #[test]
    fn registering_twice_is_refused() {
        AccountTest::with(())
            .given(vec![registered()])
            .when(register(Some(sealed("777")), None))
            .then_expect_error(AccountError::AlreadyExists);
    }

    #[test]
    fn registering_without_telegram_or_email_is_refused() {
        AccountTest::with(())
            .given_no_previous_events()
            .when(register(None, None))
            .then_expect_error(AccountError::NoIdentity);
    }

    #[test]
    fn registering_with_personal_data_sealed_for_someone_else_is_refused() {
        AccountTest::with(())
            .given_no_previous_events()
            .when(register(None, Some(sealed_for(admin(), "mail"))))
            .then_expect_error(AccountError::ForeignPersonalData);
    }

    #[test]
    fn linking_telegram_records_that_it_replaces_the_linked_id() {
        AccountTest::with(())
            .given(vec![registered()])
            .when(AccountCommand::LinkTelegram {
                telegram_user: sealed("888"),
                at: at(),
            })
            .then_expect_events(vec![AccountEvent::TelegramLinked {
                telegram_user: TelegramId::Sealed(sealed("888")),
                relinked: true,
                at: at(),
            }]);
    }

    #[test]
    fn linking_telegram_sealed_for_someone_else_is_refused() {
        AccountTest::with(())
            .given(vec![registered()])
            .when(AccountCommand::LinkTelegram {
                telegram_user: sealed_for(admin(), "888"),
                at: at(),
            })
            .then_expect_error(AccountError::ForeignPersonalData);
    }

    #[test]
    fn registering_with_a_telegram_id_sealed_for_someone_else_is_refused() {
        AccountTest::with(())
            .given_no_previous_events()
            .when(register(Some(sealed_for(admin(), "777")), None))
            .then_expect_error(AccountError::ForeignPersonalData);
    }

    #[test]
    fn erasing_personal_data_records_it_once() {
        AccountTest::with(())
            .given(vec![registered(), blocked()])
            .when(AccountCommand::ErasePersonalData { at: at() })
            .then_expect_events(vec![erased()]);
        AccountTest::with(())
            .given(vec![registered(), erased()])
            .when(AccountCommand::ErasePersonalData { at: at() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn erasing_a_missing_account_is_refused() {
        AccountTest::with(())
            .given_no_previous_events()
            .when(AccountCommand::ErasePersonalData { at: at() })
            .then_expect_error(AccountError::NotFound);
    }

    #[test]
    fn no_personal_data_is_recorded_for_an_erased_account() {
        AccountTest::with(())
            .given(vec![registered(), erased()])
            .when(AccountCommand::LinkTelegram {
                telegram_user: sealed("888"),
                at: at(),
            })
            .then_expect_error(AccountError::Erased);
        AccountTest::with(())
            .given(vec![registered(), erased()])
            .when(AccountCommand::ChangeContact {
                email: Some(sealed("mail")),
                display_name: None,
                at: at(),
            })
            .then_expect_error(AccountError::Erased);
    }

    #[test]
    fn an_erased_account_holds_no_personal_data_but_keeps_its_rights() {
        let mut account = Account::default();
        account.apply(registered());
        account.apply(admin_granted());
        account.apply(erased());
        assert!(account.is_erased());
        assert!(account.is_created());
        assert!(account.is_platform_admin());
        assert_eq!(account.telegram_user(), None);
        assert_eq!(account.email(), None);
        assert_eq!(account.display_name(), None);
    }

    #[test]
    fn linking_telegram_to_a_missing_account_is_refused() {
        AccountTest::with(())
            .given_no_previous_events()
            .when(AccountCommand::LinkTelegram {
                telegram_user: sealed("888"),
                at: at(),
            })
            .then_expect_error(AccountError::NotFound);
    }

    #[test]
    fn linking_telegram_to_a_blocked_account_is_refused() {
        AccountTest::with(())
            .given(vec![registered(), blocked()])
            .when(AccountCommand::LinkTelegram {
                telegram_user: sealed("888"),
                at: at(),
            })
            .then_expect_error(AccountError::Blocked);
    }

    #[test]
    fn turning_the_second_factor_on_with_a_linked_telegram_user_is_recorded() {
        AccountTest::with(())
            .given(vec![registered()])
            .when(AccountCommand::ChangeSecondFactor {
                enabled: true,
                at: at(),
            })
            .then_expect_events(vec![AccountEvent::SecondFactorChanged {
                enabled: true,
                at: at(),
            }]);
    }

    #[test]
    fn turning_the_second_factor_on_without_a_telegram_user_is_refused() {
        AccountTest::with(())
            .given(vec![AccountEvent::AccountRegistered {
                account_id: account_id(),
                telegram_user: None,
                email: Some(sealed("mail")),
                display_name: None,
                platform_admin: false,
                channel: Channel::Api,
                registered_at: at(),
            }])
            .when(AccountCommand::ChangeSecondFactor {
                enabled: true,
                at: at(),
            })
            .then_expect_error(AccountError::SecondFactorNeedsTelegram);
    }

    #[test]
    fn turning_the_second_factor_off_is_recorded() {
        AccountTest::with(())
            .given(vec![
                registered(),
                AccountEvent::SecondFactorChanged {
                    enabled: true,
                    at: at(),
                },
            ])
            .when(AccountCommand::ChangeSecondFactor {
                enabled: false,
                at: at(),
            })
            .then_expect_events(vec![AccountEvent::SecondFactorChanged {
                enabled: false,
                at: at(),
            }]);
    }

    #[test]
    fn changing_the_second_factor_of_a_blocked_account_is_refused() {
        AccountTest::with(())
            .given(vec![registered(), blocked()])
            .when(AccountCommand::ChangeSecondFactor {
                enabled: false,
                at: at(),
            })
            .then_expect_error(AccountError::Blocked);
    }

    #[test]
    fn changing_contact_records_only_what_changes() {
        AccountTest::with(())
            .given(vec![registered()])
            .when(AccountCommand::ChangeContact {
                email: Some(sealed("new mail")),
                display_name: Some(sealed("name")),
                at: at(),
            })
            .then_expect_events(vec![AccountEvent::AccountContactChanged {
                email: Some(sealed("new mail")),
                display_name: None,
                at: at(),
            }]);
    }

    #[test]
    fn changing_contact_is_allowed_on_a_blocked_account() {
        AccountTest::with(())
            .given(vec![registered(), blocked()])
            .when(AccountCommand::ChangeContact {
                email: None,
                display_name: Some(sealed("new name")),
                at: at(),
            })
            .then_expect_events(vec![AccountEvent::AccountContactChanged {
                email: None,
                display_name: Some(sealed("new name")),
                at: at(),
            }]);
    }

    #[test]
    fn changing_no_contact_detail_records_nothing() {
        AccountTest::with(())
            .given(vec![registered()])
            .when(AccountCommand::ChangeContact {
                email: None,
                display_name: None,
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn changing_contact_of_a_missing_account_is_refused() {
        AccountTest::with(())
            .given_no_previous_events()
            .when(AccountCommand::ChangeContact {
                email: Some(sealed("mail")),
                display_name: None,
                at: at(),
            })
            .then_expect_error(AccountError::NotFound);
    }

    #[test]
    fn changing_contact_to_data_sealed_for_someone_else_is_refused() {
        AccountTest::with(())
            .given(vec![registered()])
            .when(AccountCommand::ChangeContact {
                email: None,
                display_name: Some(sealed_for(admin(), "name")),
                at: at(),
            })
            .then_expect_error(AccountError::ForeignPersonalData);
    }

    #[test]
    fn blocking_an_account_records_the_trimmed_reason() {
        AccountTest::with(())
            .given(vec![registered()])
            .when(AccountCommand::Block {
                blocked_by: admin(),
                reason: " spam ".into(),
                at: at(),
            })
            .then_expect_events(vec![blocked()]);
    }

    #[test]
    fn blocking_a_blocked_account_is_refused() {
        AccountTest::with(())
            .given(vec![registered(), blocked()])
            .when(AccountCommand::Block {
                blocked_by: admin(),
                reason: "again".into(),
                at: at(),
            })
            .then_expect_error(AccountError::AlreadyBlocked);
    }

    #[test]
    fn blocking_without_a_reason_is_refused() {
        AccountTest::with(())
            .given(vec![registered()])
            .when(AccountCommand::Block {
                blocked_by: admin(),
                reason: "".into(),
                at: at(),
            })
            .then_expect_error(AccountError::ReasonRequired);
    }

    #[test]
    fn blocking_a_missing_account_is_refused() {
        AccountTest::with(())
            .given_no_previous_events()
            .when(AccountCommand::Block {
                blocked_by: admin(),
                reason: "spam".into(),
                at: at(),
            })
            .then_expect_error(AccountError::NotFound);
    }

    #[test]
    fn unblocking_a_blocked_account_records_it() {
        AccountTest::with(())
            .given(vec![registered(), blocked()])
            .when(AccountCommand::Unblock {
                unblocked_by: admin(),
                at: at(),
            })
            .then_expect_events(vec![AccountEvent::AccountUnblocked {
                unblocked_by: admin(),
                at: at(),
            }]);
    }

    #[test]
    fn unblocking_an_account_that_is_not_blocked_is_refused() {
        AccountTest::with(())
            .given(vec![registered()])
            .when(AccountCommand::Unblock {
                unblocked_by: admin(),
                at: at(),
            })
            .then_expect_error(AccountError::NotBlocked);
    }

    #[test]
    fn unblocking_a_missing_account_is_refused() {
        AccountTest::with(())
            .given_no_previous_events()
            .when(AccountCommand::Unblock {
                unblocked_by: admin(),
                at: at(),
            })
            .then_expect_error(AccountError::NotFound);
    }

    #[test]
    fn granting_platform_admin_records_it() {
        AccountTest::with(())
            .given(vec![registered()])
            .when(AccountCommand::GrantPlatformAdmin {
                granted_by: admin(),
                at: at(),
            })
            .then_expect_events(vec![admin_granted()]);
    }

    #[test]
    fn granting_platform_admin_to_an_admin_records_nothing() {
        AccountTest::with(())
            .given(vec![registered(), admin_granted()])
            .when(AccountCommand::GrantPlatformAdmin {
                granted_by: admin(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn granting_platform_admin_to_a_missing_account_is_refused() {
        AccountTest::with(())
            .given_no_previous_events()
            .when(AccountCommand::GrantPlatformAdmin {
                granted_by: admin(),
                at: at(),
            })
            .then_expect_error(AccountError::NotFound);
    }

    #[test]
    fn revoking_platform_admin_records_it() {
        AccountTest::with(())
            .given(vec![registered(), admin_granted()])
            .when(AccountCommand::RevokePlatformAdmin {
                revoked_by: admin(),
                at: at(),
            })
            .then_expect_events(vec![AccountEvent::PlatformAdminRevoked {
                revoked_by: admin(),
                at: at(),
            }]);
    }

    #[test]
    fn revoking_platform_admin_from_a_non_admin_records_nothing() {
        AccountTest::with(())
            .given(vec![registered()])
            .when(AccountCommand::RevokePlatformAdmin {
                revoked_by: admin(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn revoking_platform_admin_from_a_missing_account_is_refused() {
        AccountTest::with(())
            .given_no_previous_events()
            .when(AccountCommand::RevokePlatformAdmin {
                revoked_by: admin(),
                at: at(),
            })
            .then_expect_error(AccountError::NotFound);
    }

    #[test]
    fn state_reflects_identity_blocking_and_admin_rights() {
        let mut account = Account::default();
        assert!(!account.is_created());
        account.apply(registered());
        account.apply(AccountEvent::TelegramLinked {
            telegram_user: TelegramId::Sealed(sealed("888")),
            relinked: true,
            at: at(),
        });
        account.apply(AccountEvent::AccountContactChanged {
            email: Some(sealed("mail")),
            display_name: None,
            at: at(),
        });
        account.apply(admin_granted());
        account.apply(blocked());
        assert!(account.is_created());
        assert_eq!(
            account.telegram_user(),
            Some(&TelegramId::Sealed(sealed("888")))
        );
        assert_eq!(account.email(), Some(&sealed("mail")));
        assert_eq!(account.display_name(), Some(&sealed("name")));
        assert!(account.is_platform_admin());
        assert!(account.is_blocked());
        account.apply(AccountEvent::AccountUnblocked {
            unblocked_by: admin(),
            at: at(),
        });
        account.apply(AccountEvent::PlatformAdminRevoked {
            revoked_by: admin(),
            at: at(),
        });
        assert!(!account.is_blocked());
        assert!(!account.is_platform_admin());
        let json = serde_json::to_string(&account).unwrap();
        assert_eq!(serde_json::from_str::<Account>(&json).unwrap(), account);
    }

    #[test]
    fn events_serialise_externally_tagged_by_their_variant_name() {
        let event = registered();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(event.event_type(), "AccountRegistered");
        assert_eq!(event.event_version(), crate::EVENT_VERSION_2);
        let body = &json["AccountRegistered"];
        assert_eq!(body["telegram_user"]["ciphertext"], "777");
        assert!(body.get("telegram_user_id").is_none(), "no clear id");
        assert_eq!(body["channel"], "telegram");
        assert_eq!(body["display_name"]["ciphertext"], "name");
        assert_eq!(serde_json::from_value::<AccountEvent>(json).unwrap(), event);

        for event in [
            AccountEvent::TelegramLinked {
                telegram_user: TelegramId::Sealed(sealed("1")),
                relinked: false,
                at: at(),
            },
            erased(),
            AccountEvent::AccountContactChanged {
                email: Some(sealed("m")),
                display_name: None,
                at: at(),
            },
            blocked(),
            AccountEvent::AccountUnblocked {
                unblocked_by: admin(),
                at: at(),
            },
            admin_granted(),
            AccountEvent::PlatformAdminRevoked {
                revoked_by: admin(),
                at: at(),
            },
            AccountEvent::SecondFactorChanged {
                enabled: true,
                at: at(),
            },
        ] {
            let json = serde_json::to_value(&event).unwrap();
            let object = json.as_object().unwrap();
            assert_eq!(object.len(), 1);
            assert!(object.contains_key(&event.event_type()));
            assert_eq!(serde_json::from_value::<AccountEvent>(json).unwrap(), event);
        }
    }
}
