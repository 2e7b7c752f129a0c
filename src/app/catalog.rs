//! Stores, products, accounts and stock: commands that touch one aggregate at a time (except
//! product creation, which also starts tracking the product's stock).

use aggregates::account::AccountCommand;
use aggregates::product::ProductCommand;
use aggregates::stock::{AdjustmentReason, StockCommand, StockError};
use aggregates::store::StoreCommand;
use aggregates::{AccountId, Currency, Money, ProductId, StoreId, StoreRole};

use super::{App, AppError, CommandContext};

/// A store to create.
#[derive(Clone, Debug)]
pub struct NewStore {
    pub owner_id: AccountId,
    pub name: String,
    pub currency: Currency,
    pub timezone: String,
    pub payment_instructions: String,
    pub default_low_stock_threshold: u32,
    pub reservation_ttl_minutes: u32,
}

/// A product to create in a store; its price is in the store's currency.
#[derive(Clone, Debug)]
pub struct NewProduct {
    pub name: String,
    pub description: String,
    pub sku: String,
    pub price: Money,
}

impl App {
    /// Registers a staff account known by e-mail (sealed) and/or Telegram id.
    #[tracing::instrument(skip(self, ctx, email))]
    pub async fn register_account(
        &self,
        ctx: &CommandContext,
        email: Option<&str>,
        telegram_user_id: Option<i64>,
        platform_admin: bool,
    ) -> Result<AccountId, AppError> {
        let account_id = AccountId::new();
        // A Telegram id belongs to one account: reserved first, released if registering fails.
        let reserved = self
            .reserve_telegram_for_registration(telegram_user_id, account_id)
            .await?;
        let registered = async {
            let email = match email {
                Some(email) => Some(self.personal_data.seal(account_id, &email).await?),
                None => None,
            };
            let command = AccountCommand::Register {
                account_id,
                telegram_user_id,
                email,
                display_name: None,
                platform_admin,
                channel: ctx.channel,
                at: super::now(),
            };
            self.accounts
                .execute(&account_id.to_string(), command, ctx)
                .await
        }
        .await;
        if let Err(err) = registered {
            if reserved {
                self.release_telegram_for_registration(account_id).await?;
            }
            return Err(err);
        }
        Ok(account_id)
    }

    /// Creates a store; its creator becomes its OWNER.
    #[tracing::instrument(skip(self, ctx, store))]
    pub async fn create_store(
        &self,
        ctx: &CommandContext,
        store: NewStore,
    ) -> Result<StoreId, AppError> {
        let store_id = StoreId::new();
        let command = StoreCommand::CreateStore {
            store_id,
            owner_id: store.owner_id,
            name: store.name,
            currency: store.currency,
            timezone: store.timezone,
            payment_instructions: store.payment_instructions,
            default_low_stock_threshold: store.default_low_stock_threshold,
            reservation_ttl_minutes: store.reservation_ttl_minutes,
            at: super::now(),
        };
        self.stores
            .execute(&store_id.to_string(), command, ctx)
            .await?;
        Ok(store_id)
    }

    /// Gives `account_id` a role in a store (or changes it).
    pub async fn assign_staff_role(
        &self,
        ctx: &CommandContext,
        store_id: StoreId,
        account_id: AccountId,
        role: StoreRole,
    ) -> Result<(), AppError> {
        let command = StoreCommand::AssignStaffRole {
            account_id,
            role,
            assigned_by: ctx.actor.account_id.unwrap_or_default(),
            at: super::now(),
        };
        self.stores
            .execute(&store_id.to_string(), command, ctx)
            .await
    }

    /// Creates a product priced in its store's currency and starts tracking its stock.
    ///
    /// Stock tracking is started first: if the process stops in between, the leftover is a
    /// Stock with no product (inert), never a product whose stock cannot be received.
    #[tracing::instrument(skip(self, ctx, product))]
    pub async fn create_product(
        &self,
        ctx: &CommandContext,
        store_id: StoreId,
        product: NewProduct,
    ) -> Result<ProductId, AppError> {
        let store = self.stores.load(&store_id.to_string()).await?;
        let currency = store
            .currency()
            .ok_or(AppError::Store(aggregates::store::StoreError::NotFound))?;
        let product_id = ProductId::new();
        let at = super::now();
        let track = StockCommand::Track {
            product_id,
            store_id,
            store_default_threshold: store.default_low_stock_threshold(),
            at,
        };
        match self
            .stock
            .execute(&product_id.to_string(), track, ctx)
            .await
        {
            Ok(()) | Err(AppError::Stock(StockError::AlreadyExists)) => {}
            Err(err) => return Err(err),
        }
        let command = ProductCommand::CreateProduct {
            product_id,
            store_id,
            store_currency: currency,
            name: product.name,
            description: product.description,
            sku: product.sku,
            price: product.price,
            at,
        };
        self.products
            .execute(&product_id.to_string(), command, ctx)
            .await?;
        Ok(product_id)
    }

    /// Records units arriving for a product.
    pub async fn receive_stock(
        &self,
        ctx: &CommandContext,
        product_id: ProductId,
        quantity: i64,
        note: Option<String>,
    ) -> Result<(), AppError> {
        let command = StockCommand::Receive {
            quantity,
            note,
            at: super::now(),
        };
        self.stock
            .execute(&product_id.to_string(), command, ctx)
            .await
    }

    /// Adds or removes units outside the order flow, with a reason.
    pub async fn adjust_stock(
        &self,
        ctx: &CommandContext,
        product_id: ProductId,
        delta: i64,
        reason: AdjustmentReason,
        note: Option<String>,
    ) -> Result<(), AppError> {
        let command = StockCommand::Adjust {
            delta,
            reason,
            note,
            at: super::now(),
        };
        self.stock
            .execute(&product_id.to_string(), command, ctx)
            .await
    }

    /// Sets (or, with `None`, clears) a product's own low-stock threshold.
    pub async fn set_stock_threshold(
        &self,
        ctx: &CommandContext,
        product_id: ProductId,
        threshold: Option<u32>,
    ) -> Result<(), AppError> {
        let command = StockCommand::SetThreshold {
            threshold,
            at: super::now(),
        };
        self.stock
            .execute(&product_id.to_string(), command, ctx)
            .await
    }
}

impl App {
    /// Acknowledges the product's open low/out-of-stock alert.
    pub async fn acknowledge_stock_alert(
        &self,
        ctx: &CommandContext,
        product_id: ProductId,
    ) -> Result<(), AppError> {
        let command = StockCommand::AcknowledgeAlert {
            acknowledged_by: ctx.actor.account_id.unwrap_or_default(),
            at: super::now(),
        };
        self.stock
            .execute(&product_id.to_string(), command, ctx)
            .await
    }
}
