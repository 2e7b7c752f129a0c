//! Who people are: contact details from the `accounts` read model, opened with the people's
//! keys. A person who was erased reads as erased, never as an error.

use std::collections::HashMap;

use aggregates::{AccountId, SealedPersonalData, TelegramId};
use projections::read_models::accounts::queries as accounts;
use uuid::Uuid;

use super::personal_data::{open_with, Revealed, SubjectKeys};
use super::{App, AppError};

/// A person's contact details as far as they are known and not erased.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contact {
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub telegram_user_id: Option<i64>,
    /// Their personal data was erased: name, e-mail and Telegram id are gone for good.
    pub erased: bool,
}

impl App {
    /// The contact details of `people` (missing ids have no account yet), with two queries
    /// however many people are asked for.
    pub async fn contacts(&self, people: &[Uuid]) -> Result<HashMap<Uuid, Contact>, AppError> {
        if people.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = accounts::sealed_contacts(&self.pool, people).await?;
        let subjects: Vec<AccountId> = rows.iter().map(|row| AccountId(row.account_id)).collect();
        let keys = self.personal_data.keys(&subjects).await?;
        let mut contacts = HashMap::with_capacity(rows.len());
        for row in rows {
            // Erased by the tombstone (at once) or by the read model (after the erasure event
            // is projected); either way nothing personal is shown, not even an old clear id.
            let erased = row.erased_at.is_some() || keys.is_erased(AccountId(row.account_id));
            let mut contact = Contact {
                erased,
                ..Contact::default()
            };
            if !erased {
                contact.telegram_user_id = match row.telegram_user.map(|t| t.0) {
                    Some(TelegramId::Sealed(sealed)) => {
                        reveal::<i64>(&keys, Some(&sealed), &mut contact.erased)?
                    }
                    Some(TelegramId::Legacy(id)) => Some(id),
                    None => None,
                };
                contact.email = reveal(&keys, row.email.as_deref(), &mut contact.erased)?;
                contact.display_name =
                    reveal(&keys, row.display_name.as_deref(), &mut contact.erased)?;
            }
            contacts.insert(row.account_id, contact);
        }
        Ok(contacts)
    }
}

fn reveal<T: serde::de::DeserializeOwned>(
    keys: &SubjectKeys,
    sealed: Option<&SealedPersonalData>,
    erased: &mut bool,
) -> Result<Option<T>, AppError> {
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    Ok(match open_with::<T>(keys, sealed)? {
        Revealed::Data(value) => Some(value),
        Revealed::Erased => {
            *erased = true;
            None
        }
    })
}
