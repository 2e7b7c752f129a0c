//! What the bot's buttons carry (Telegram gives a button at most 64 bytes of callback data) and
//! how keyboards are built.

use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};
use uuid::Uuid;

/// A button press, as callback data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The first page of a store's window.
    Catalog(Uuid),
    /// The page of a window after this product (pages are keyed, so products added or
    /// archived meanwhile neither repeat nor vanish).
    CatalogAfter(Uuid),
    Product(Uuid),
    Add(Uuid),
    Cart,
    More(Uuid),
    Less(Uuid),
    ClearCart,
    Checkout,
    Order(Uuid),
    CancelOrder(Uuid),
    /// The customer will send a receipt for this order next.
    Pay(Uuid),
    Verify(Uuid),
    Reject(Uuid),
    /// Tick or untick a receipt for a bulk verification.
    Toggle(Uuid),
    VerifySelected,
    /// Units of this product arrived: ask how many.
    Received(Uuid),
    /// The answer to a QR login confirmation (its token waits in the chat's state).
    ConfirmLogin(bool),
    /// The answer to a second-factor prompt.
    SecondFactor {
        approve: bool,
        login_id: Uuid,
    },
}

impl Action {
    pub fn data(self) -> String {
        match self {
            Action::Catalog(id) => format!("c:{id}"),
            Action::CatalogAfter(id) => format!("n:{id}"),
            Action::Product(id) => format!("p:{id}"),
            Action::Add(id) => format!("a:{id}"),
            Action::Cart => "k".into(),
            Action::More(id) => format!("+:{id}"),
            Action::Less(id) => format!("-:{id}"),
            Action::ClearCart => "x".into(),
            Action::Checkout => "o".into(),
            Action::Order(id) => format!("d:{id}"),
            Action::CancelOrder(id) => format!("z:{id}"),
            Action::Pay(id) => format!("y:{id}"),
            Action::Verify(id) => format!("v:{id}"),
            Action::Reject(id) => format!("r:{id}"),
            Action::Toggle(id) => format!("t:{id}"),
            Action::VerifySelected => "V".into(),
            Action::Received(id) => format!("u:{id}"),
            Action::ConfirmLogin(yes) => format!("l:{}", u8::from(yes)),
            Action::SecondFactor { approve, login_id } => {
                format!("f:{}:{login_id}", u8::from(approve))
            }
        }
    }

    /// The action a button's data names; `None` for anything else (old or forged data).
    pub fn parse(data: &str) -> Option<Self> {
        let (kind, rest) = data.split_once(':').unwrap_or((data, ""));
        let id = || rest.parse::<Uuid>().ok();
        Some(match kind {
            "c" => Action::Catalog(id()?),
            "n" => Action::CatalogAfter(id()?),
            "p" => Action::Product(id()?),
            "a" => Action::Add(id()?),
            "k" => Action::Cart,
            "+" => Action::More(id()?),
            "-" => Action::Less(id()?),
            "x" => Action::ClearCart,
            "o" => Action::Checkout,
            "d" => Action::Order(id()?),
            "z" => Action::CancelOrder(id()?),
            "y" => Action::Pay(id()?),
            "v" => Action::Verify(id()?),
            "r" => Action::Reject(id()?),
            "t" => Action::Toggle(id()?),
            "V" => Action::VerifySelected,
            "u" => Action::Received(id()?),
            "l" => Action::ConfirmLogin(rest == "1"),
            "f" => {
                let (approve, login) = rest.split_once(':')?;
                Action::SecondFactor {
                    approve: approve == "1",
                    login_id: login.parse().ok()?,
                }
            }
            _ => return None,
        })
    }
}

/// A button that presses `action`.
pub fn button(text: impl Into<String>, action: Action) -> InlineKeyboardButton {
    InlineKeyboardButton::callback(text.into(), action.data())
}

/// A keyboard of rows of buttons.
pub fn keyboard(rows: Vec<Vec<InlineKeyboardButton>>) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_fits_telegrams_64_bytes_and_reads_back() {
        let id = Uuid::now_v7();
        let all = [
            Action::Catalog(id),
            Action::CatalogAfter(id),
            Action::Product(id),
            Action::Add(id),
            Action::Cart,
            Action::More(id),
            Action::Less(id),
            Action::ClearCart,
            Action::Checkout,
            Action::Order(id),
            Action::CancelOrder(id),
            Action::Pay(id),
            Action::Verify(id),
            Action::Reject(id),
            Action::Toggle(id),
            Action::VerifySelected,
            Action::Received(id),
            Action::ConfirmLogin(true),
            Action::ConfirmLogin(false),
            Action::SecondFactor {
                approve: false,
                login_id: id,
            },
        ];
        for action in all {
            let data = action.data();
            assert!(data.len() <= 64, "{data}");
            assert_eq!(Action::parse(&data), Some(action));
        }
        assert_eq!(Action::parse("v:not-a-uuid"), None);
        assert_eq!(Action::parse("nonsense"), None);
    }
}
