//! Stores, products, accounts and stock: commands that touch one aggregate at a time (except
//! product creation, which also starts tracking the product's stock).

use aggregates::account::AccountCommand;
use aggregates::product::{ProductCommand, ProductError};
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

/// Store settings to change; `None` keeps the current value.
#[derive(Clone, Debug, Default)]
pub struct StoreSettingsChange {
    pub name: Option<String>,
    /// May only restate the store's own currency.
    pub currency: Option<aggregates::Currency>,
    pub timezone: Option<String>,
    pub payment_instructions: Option<String>,
    pub default_low_stock_threshold: Option<u32>,
    pub reservation_ttl_minutes: Option<u32>,
}

/// Product changes; `None` keeps the current value. `archived: Some(true)` archives.
#[derive(Clone, Debug, Default)]
pub struct ProductChange {
    pub name: Option<String>,
    pub description: Option<String>,
    pub sku: Option<String>,
    pub price: Option<Money>,
    pub archived: Option<bool>,
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
        self.claim_sku(store_id, &product.sku, product_id).await?;
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

    /// Changes store settings; `None` leaves a setting as it is.
    #[tracing::instrument(skip(self, ctx, changes))]
    pub async fn change_store_settings(
        &self,
        ctx: &CommandContext,
        store_id: StoreId,
        changes: StoreSettingsChange,
    ) -> Result<(), AppError> {
        let command = StoreCommand::ChangeSettings {
            name: changes.name,
            currency: changes.currency,
            timezone: changes.timezone,
            payment_instructions: changes.payment_instructions,
            default_low_stock_threshold: changes.default_low_stock_threshold,
            reservation_ttl_minutes: changes.reservation_ttl_minutes,
            changed_by: ctx.actor.account_id.unwrap_or_default(),
            at: super::now(),
        };
        self.stores
            .execute(&store_id.to_string(), command, ctx)
            .await
    }

    /// Changes a product's details, price and/or status, one command per kind of change, in
    /// that order. The price must be in the store's currency.
    #[tracing::instrument(skip(self, ctx, changes))]
    pub async fn update_product(
        &self,
        ctx: &CommandContext,
        product_id: ProductId,
        changes: ProductChange,
    ) -> Result<(), AppError> {
        let id = product_id.to_string();
        let at = super::now();
        let previous_sku = match &changes.sku {
            Some(sku) => {
                let product = self.products.load(&id).await?;
                if !product.is_created() {
                    return Err(ProductError::NotFound.into());
                }
                let previous = product.sku().to_owned();
                if sku_key(sku) != sku_key(&previous) {
                    self.claim_sku(product.store_id(), sku, product_id).await?;
                    Some((product.store_id(), previous))
                } else {
                    None
                }
            }
            None => None,
        };
        if changes.name.is_some() || changes.description.is_some() || changes.sku.is_some() {
            let command = ProductCommand::UpdateDetails {
                name: changes.name,
                description: changes.description,
                sku: changes.sku,
                at,
            };
            self.products.execute(&id, command, ctx).await?;
            if let Some((store_id, previous)) = previous_sku {
                sqlx::query(
                    "delete from product_sku_claims \
                     where store_id = $1 and sku_key = $2 and product_id = $3",
                )
                .bind(store_id.0)
                .bind(sku_key(&previous))
                .bind(product_id.0)
                .execute(&self.pool)
                .await?;
            }
        }
        if let Some(price) = changes.price {
            self.products
                .execute(&id, ProductCommand::ChangePrice { price, at }, ctx)
                .await?;
        }
        match changes.archived {
            Some(true) => {
                self.products
                    .execute(&id, ProductCommand::Archive { at }, ctx)
                    .await?
            }
            Some(false) => {
                self.products
                    .execute(&id, ProductCommand::Reactivate { at }, ctx)
                    .await?
            }
            None => {}
        }
        Ok(())
    }

    /// Claims `sku` in the store for `product_id`: refused with `SkuTaken` while another
    /// existing product holds it. A claim left by a product that never came to exist (the
    /// process stopped between claim and event) is taken over.
    async fn claim_sku(
        &self,
        store_id: StoreId,
        sku: &str,
        product_id: ProductId,
    ) -> Result<(), AppError> {
        let key = sku_key(sku);
        let holder: Option<uuid::Uuid> = sqlx::query_scalar(
            "insert into product_sku_claims (store_id, sku_key, product_id) values ($1, $2, $3) \
             on conflict (store_id, sku_key) do update set product_id = product_sku_claims.product_id \
             returning product_id",
        )
        .bind(store_id.0)
        .bind(&key)
        .bind(product_id.0)
        .fetch_optional(&self.pool)
        .await?;
        let Some(holder) = holder.filter(|h| *h != product_id.0) else {
            return Ok(());
        };
        let existing = self.products.load(&holder.to_string()).await?;
        if existing.is_created() && sku_key(existing.sku()) == key {
            return Err(AppError::SkuTaken(sku.to_owned()));
        }
        // The holder never came to exist, or has since changed its sku: take the claim over,
        // unless someone else just did.
        let taken: u64 = sqlx::query(
            "update product_sku_claims set product_id = $4 \
             where store_id = $1 and sku_key = $2 and product_id = $3",
        )
        .bind(store_id.0)
        .bind(&key)
        .bind(holder)
        .bind(product_id.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if taken == 1 {
            Ok(())
        } else {
            Err(AppError::SkuTaken(sku.to_owned()))
        }
    }

    /// The store a product belongs to (from the write side: no projection lag), or
    /// `ProductError::NotFound`.
    pub async fn store_of_product(&self, product_id: ProductId) -> Result<StoreId, AppError> {
        let product = self.products.load(&product_id.to_string()).await?;
        if !product.is_created() {
            return Err(ProductError::NotFound.into());
        }
        Ok(product.store_id())
    }

    /// Stops taking orders from a customer in one store (or, with `blocked: false`, starts
    /// again).
    #[tracing::instrument(skip(self, ctx, reason))]
    pub async fn set_customer_blocked(
        &self,
        ctx: &CommandContext,
        store_id: StoreId,
        customer_id: AccountId,
        blocked: bool,
        reason: Option<String>,
    ) -> Result<(), AppError> {
        let actor = ctx.actor.account_id.unwrap_or_default();
        let at = super::now();
        let command = if blocked {
            StoreCommand::BlockCustomer {
                customer_id,
                blocked_by: actor,
                reason: reason.unwrap_or_default(),
                at,
            }
        } else {
            StoreCommand::UnblockCustomer {
                customer_id,
                unblocked_by: actor,
                at,
            }
        };
        self.stores
            .execute(&store_id.to_string(), command, ctx)
            .await
    }

    /// The staff account that logs in with `email` (case-insensitive), if any.
    pub async fn staff_account_by_email(&self, email: &str) -> Result<Option<AccountId>, AppError> {
        let id: Option<uuid::Uuid> =
            sqlx::query_scalar("select account_id from credentials where email = lower($1)")
                .bind(email.trim())
                .fetch_optional(&self.pool)
                .await?;
        Ok(id.map(AccountId))
    }

    /// The login e-mail of a staff account, if it has one.
    pub async fn staff_email(&self, account_id: AccountId) -> Result<Option<String>, AppError> {
        Ok(
            sqlx::query_scalar("select email from credentials where account_id = $1")
                .bind(account_id.0)
                .fetch_optional(&self.pool)
                .await?,
        )
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

/// The form of a sku that must be unique within a store.
fn sku_key(sku: &str) -> String {
    sku.trim().to_lowercase()
}
