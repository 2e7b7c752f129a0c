//! Stores, products, accounts and stock. Most commands touch one aggregate; creating a product
//! also starts tracking its stock (with its initial units and threshold) and claims its sku,
//! all in one commit.

use aggregates::account::AccountCommand;
use aggregates::product::{Product, Sku};
use aggregates::product::{ProductCommand, ProductError};
use aggregates::stock::{AdjustmentReason, Stock, StockCommand};
use aggregates::store::{StoreCommand, StoreName, TimeZone};
use aggregates::{AccountId, Currency, Money, ProductId, StoreId, StoreRole};
use chrono::{DateTime, Utc};

use super::authz::{grant, StoreAccess};
use super::event_store::{Decided, Decision, SideWrite, UnitOfWork};
use super::users::PlatformAdmin;
use super::{App, AppError, CommandContext};

/// A store to create.
#[derive(Clone, Debug)]
pub struct NewStore {
    pub owner_id: AccountId,
    pub name: StoreName,
    pub currency: Currency,
    pub timezone: TimeZone,
    pub payment_instructions: String,
    pub default_low_stock_threshold: u32,
    pub reservation_ttl_minutes: u32,
}

/// Store settings to change; `None` keeps the current value.
#[derive(Clone, Debug, Default)]
pub struct StoreSettingsChange {
    pub name: Option<StoreName>,
    /// May only restate the store's own currency.
    pub currency: Option<aggregates::Currency>,
    pub timezone: Option<TimeZone>,
    pub payment_instructions: Option<String>,
    pub default_low_stock_threshold: Option<u32>,
    pub reservation_ttl_minutes: Option<u32>,
}

/// Product changes; `None` keeps the current value. `archived: Some(true)` archives.
#[derive(Clone, Debug, Default)]
pub struct ProductChange {
    pub name: Option<String>,
    pub description: Option<String>,
    pub sku: Option<Sku>,
    pub price: Option<Money>,
    pub archived: Option<bool>,
}

/// A product to create in a store; its price is in the store's currency.
#[derive(Clone, Debug)]
pub struct NewProduct {
    pub name: String,
    pub description: String,
    pub sku: Sku,
    pub price: Money,
    /// Units already on the shelf (received with the note "initial stock").
    pub initial_stock: Option<i64>,
    /// The product's own low-stock threshold (else the store's default applies).
    pub low_stock_threshold: Option<u32>,
}

impl App {
    /// Registers an account known by e-mail (sealed) and/or Telegram id (the CLI, seeding, and
    /// Telegram sign-in of a new customer).
    ///
    /// Public only for the bench binary (`src/bench/`, outside this library) and hidden from
    /// the docs: not part of the library's API.
    #[doc(hidden)]
    #[tracing::instrument(skip(self, ctx, email, telegram_user_id))]
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
            let telegram_user = match telegram_user_id {
                Some(id) => Some(self.personal_data.seal(account_id, &id).await?),
                None => None,
            };
            let command = AccountCommand::Register {
                account_id,
                telegram_user,
                email,
                display_name: None,
                platform_admin,
                channel: ctx.channel(),
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

    /// Creates a store, as a platform admin. Its owner is `store.owner_id` when given (an
    /// existing account), otherwise the admin.
    #[tracing::instrument(skip(self, admin, store))]
    pub async fn create_store(
        &self,
        admin: &PlatformAdmin,
        mut store: NewStore,
    ) -> Result<Decided<StoreId>, AppError> {
        if store.owner_id == AccountId::default() {
            store.owner_id = admin.account_id();
        }
        self.require_account(store.owner_id, "owner_id").await?;
        self.open_store(admin.ctx(), store).await
    }

    /// Creates a store owned by `store.owner_id` (seeding and the platform admin's service).
    ///
    /// Public only for the bench binary (`src/bench/`, outside this library) and hidden from
    /// the docs: not part of the library's API.
    #[doc(hidden)]
    pub async fn open_store(
        &self,
        ctx: &CommandContext,
        store: NewStore,
    ) -> Result<Decided<StoreId>, AppError> {
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
        let decided = self
            .stores
            .decide(&store_id.to_string(), command, ctx)
            .await?;
        Ok(decided.map(|()| store_id))
    }

    /// Makes `account_id` an OWNER of a store, as a platform admin: how a store whose owners
    /// are gone (or a demo store) gets one, without the admin holding a role there.
    #[tracing::instrument(skip(self, admin))]
    pub async fn assign_store_owner(
        &self,
        admin: &PlatformAdmin,
        store_id: StoreId,
        account_id: AccountId,
    ) -> Result<Decided<()>, AppError> {
        self.require_account(account_id, "account_id").await?;
        let command = StoreCommand::AssignStaffRole {
            account_id,
            role: StoreRole::Owner,
            assigned_by: admin.account_id(),
            at: super::now(),
        };
        self.stores
            .execute_in(store_id, &store_id.to_string(), command, admin.ctx())
            .await
    }

    /// Makes `account_id` an owner of a store on the system's authority (`seed-demo`).
    ///
    /// Public only for the bench binary (`src/bench/`, outside this library) and hidden from
    /// the docs: not part of the library's API.
    #[doc(hidden)]
    pub async fn grant_owner(
        &self,
        ctx: &CommandContext,
        store_id: StoreId,
        account_id: AccountId,
    ) -> Result<(), AppError> {
        let command = StoreCommand::AssignStaffRole {
            account_id,
            role: StoreRole::Owner,
            assigned_by: account_id,
            at: super::now(),
        };
        self.stores
            .execute_in(store_id, &store_id.to_string(), command, ctx)
            .await?;
        Ok(())
    }

    /// Refuses an id no account has (`field` names it in the refusal).
    pub(crate) async fn require_account(
        &self,
        account_id: AccountId,
        field: &'static str,
    ) -> Result<(), AppError> {
        if self
            .accounts
            .load(&account_id.to_string())
            .await?
            .is_created()
        {
            Ok(())
        } else {
            Err(AppError::invalid(field, "no account has this id"))
        }
    }

    /// Creates a product priced in its store's currency, claims its sku in the store and starts
    /// tracking its stock with its initial units and threshold: one commit, or nothing.
    #[tracing::instrument(skip(self, access, product))]
    pub async fn create_product(
        &self,
        access: &StoreAccess<grant::ManageProducts>,
        product: NewProduct,
    ) -> Result<Decided<ProductId>, AppError> {
        let store_id = access.store_id();
        let store = self.stores.load(&store_id.to_string()).await?;
        let currency = store
            .currency()
            .ok_or(AppError::Store(aggregates::store::StoreError::NotFound))?;
        let creation = ProductCreation {
            product_id: ProductId::new(),
            store_id,
            currency,
            store_default_threshold: store.default_low_stock_threshold(),
            product,
            at: super::now(),
        };
        let decided = self.events.decide(access.ctx(), &creation).await?;
        Ok(decided.map(|()| creation.product_id))
    }

    /// Changes store settings; `None` leaves a setting as it is.
    #[tracing::instrument(skip(self, access, changes))]
    pub async fn change_store_settings(
        &self,
        access: &StoreAccess<grant::ChangeStoreSettings>,
        changes: StoreSettingsChange,
    ) -> Result<Decided<()>, AppError> {
        let store_id = access.store_id();
        let command = StoreCommand::ChangeSettings {
            name: changes.name,
            currency: changes.currency,
            timezone: changes.timezone,
            payment_instructions: changes.payment_instructions,
            default_low_stock_threshold: changes.default_low_stock_threshold,
            reservation_ttl_minutes: changes.reservation_ttl_minutes,
            changed_by: access.account_id(),
            at: super::now(),
        };
        self.stores
            .execute_in(store_id, &store_id.to_string(), command, access.ctx())
            .await
    }

    /// Changes a product's details, price and/or status (one command per kind of change, in
    /// that order) and moves its sku claim if the sku changes: one commit, or nothing. The price
    /// must be in the store's currency.
    #[tracing::instrument(skip(self, access, changes))]
    pub async fn update_product(
        &self,
        access: &StoreAccess<grant::ManageProducts>,
        product_id: ProductId,
        changes: ProductChange,
    ) -> Result<Decided<()>, AppError> {
        let update = ProductUpdate {
            store_id: access.store_id(),
            product_id,
            changes,
            at: super::now(),
        };
        self.events.decide(access.ctx(), &update).await
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

    /// Stops taking orders from a customer in the store (or, with `blocked: false`, starts
    /// again).
    #[tracing::instrument(skip(self, access, reason))]
    pub async fn set_customer_blocked(
        &self,
        access: &StoreAccess<grant::ManageCustomers>,
        customer_id: AccountId,
        blocked: bool,
        reason: Option<String>,
    ) -> Result<Decided<()>, AppError> {
        let actor = access.account_id();
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
        let store_id = access.store_id();
        self.stores
            .execute_in(store_id, &store_id.to_string(), command, access.ctx())
            .await
    }

    /// Records units arriving for a product of the store.
    pub async fn receive_stock(
        &self,
        access: &StoreAccess<grant::ManageStock>,
        product_id: ProductId,
        quantity: i64,
        note: Option<String>,
    ) -> Result<Decided<()>, AppError> {
        let command = StockCommand::Receive {
            quantity,
            note,
            at: super::now(),
        };
        self.stock
            .execute_in(
                access.store_id(),
                &product_id.to_string(),
                command,
                access.ctx(),
            )
            .await
    }

    /// Adds or removes units outside the order flow, with a reason.
    pub async fn adjust_stock(
        &self,
        access: &StoreAccess<grant::ManageStock>,
        product_id: ProductId,
        delta: i64,
        reason: AdjustmentReason,
        note: Option<String>,
    ) -> Result<Decided<()>, AppError> {
        let command = StockCommand::Adjust {
            delta,
            reason,
            note,
            at: super::now(),
        };
        self.stock
            .execute_in(
                access.store_id(),
                &product_id.to_string(),
                command,
                access.ctx(),
            )
            .await
    }

    /// Sets (or, with `None`, clears) a product's own low-stock threshold.
    pub async fn set_stock_threshold(
        &self,
        access: &StoreAccess<grant::ManageStock>,
        product_id: ProductId,
        threshold: Option<u32>,
    ) -> Result<Decided<()>, AppError> {
        let command = StockCommand::SetThreshold {
            threshold,
            at: super::now(),
        };
        self.stock
            .execute_in(
                access.store_id(),
                &product_id.to_string(),
                command,
                access.ctx(),
            )
            .await
    }

    /// Acknowledges the product's open low/out-of-stock alert.
    pub async fn acknowledge_stock_alert(
        &self,
        access: &StoreAccess<grant::AcknowledgeAlerts>,
        product_id: ProductId,
    ) -> Result<Decided<()>, AppError> {
        let command = StockCommand::AcknowledgeAlert {
            acknowledged_by: access.account_id(),
            at: super::now(),
        };
        self.stock
            .execute_in(
                access.store_id(),
                &product_id.to_string(),
                command,
                access.ctx(),
            )
            .await
    }
}

/// The form of a sku that must be unique within a store.
fn sku_key(sku: &str) -> String {
    sku.trim().to_lowercase()
}

/// A product, its stock and its sku claim.
struct ProductCreation {
    product_id: ProductId,
    store_id: StoreId,
    currency: Currency,
    store_default_threshold: u32,
    product: NewProduct,
    at: DateTime<Utc>,
}

impl Decision for ProductCreation {
    type Outcome = ();

    async fn decide(&self, uow: &mut UnitOfWork<'_>) -> Result<(), AppError> {
        let at = self.at;
        let mut product = uow.create::<Product>(self.product_id);
        let create = ProductCommand::CreateProduct {
            product_id: self.product_id,
            store_id: self.store_id,
            store_currency: self.currency,
            name: self.product.name.clone(),
            description: self.product.description.clone(),
            sku: self.product.sku.clone(),
            price: self.product.price,
            at,
        };
        uow.execute(&mut product, create).await?;
        let mut stock = uow.create::<Stock>(self.product_id);
        let track = StockCommand::Track {
            product_id: self.product_id,
            store_id: self.store_id,
            store_default_threshold: self.store_default_threshold,
            at,
        };
        uow.execute(&mut stock, track).await?;
        if let Some(threshold) = self.product.low_stock_threshold {
            let threshold = StockCommand::SetThreshold {
                threshold: Some(threshold),
                at,
            };
            uow.execute(&mut stock, threshold).await?;
        }
        if let Some(quantity) = self.product.initial_stock {
            let receive = StockCommand::Receive {
                quantity,
                note: Some("initial stock".into()),
                at,
            };
            uow.execute(&mut stock, receive).await?;
        }
        uow.also(claim_sku(self.store_id, product.sku(), self.product_id));
        Ok(())
    }
}

/// A product's changes, and its sku claim moved with its sku.
struct ProductUpdate {
    store_id: StoreId,
    product_id: ProductId,
    changes: ProductChange,
    at: DateTime<Utc>,
}

impl Decision for ProductUpdate {
    type Outcome = ();

    async fn decide(&self, uow: &mut UnitOfWork<'_>) -> Result<(), AppError> {
        let (changes, at) = (&self.changes, self.at);
        let mut product = uow
            .load_in::<Product>(self.store_id, self.product_id)
            .await?;
        let previous_sku = product.sku().to_owned();
        if changes.name.is_some() || changes.description.is_some() || changes.sku.is_some() {
            let command = ProductCommand::UpdateDetails {
                name: changes.name.clone(),
                description: changes.description.clone(),
                sku: changes.sku.clone(),
                at,
            };
            uow.execute(&mut product, command).await?;
        }
        if let Some(price) = changes.price {
            uow.execute(&mut product, ProductCommand::ChangePrice { price, at })
                .await?;
        }
        match changes.archived {
            Some(true) => {
                uow.execute(&mut product, ProductCommand::Archive { at })
                    .await?
            }
            Some(false) => {
                uow.execute(&mut product, ProductCommand::Reactivate { at })
                    .await?
            }
            None => {}
        }
        if sku_key(product.sku()) != sku_key(&previous_sku) {
            let store_id = product.store_id();
            uow.also(release_sku(store_id, &previous_sku, self.product_id));
            uow.also(claim_sku(store_id, product.sku(), self.product_id));
        }
        Ok(())
    }
}

/// Claims `sku` in the store for `product_id`, in the decision's transaction: refused with
/// `SkuTaken` while another product of the store holds it (the claim's primary key).
fn claim_sku(store_id: StoreId, sku: &str, product_id: ProductId) -> SideWrite {
    let sku = sku.to_owned();
    Box::new(move |conn| {
        Box::pin(async move {
            sqlx::query(
                "insert into product_sku_claims (store_id, sku_key, product_id) \
                 values ($1, $2, $3)",
            )
            .bind(store_id.0)
            .bind(sku_key(&sku))
            .bind(product_id.0)
            .execute(conn)
            .await
            .map_err(|err| match super::error::constraint(&err) {
                Some("product_sku_claims_pkey") => AppError::SkuTaken(sku),
                _ => err.into(),
            })?;
            Ok(())
        })
    })
}

/// Gives up the product's claim on its previous sku, in the decision's transaction.
fn release_sku(store_id: StoreId, sku: &str, product_id: ProductId) -> SideWrite {
    let key = sku_key(sku);
    Box::new(move |conn| {
        Box::pin(async move {
            sqlx::query(
                "delete from product_sku_claims \
                 where store_id = $1 and sku_key = $2 and product_id = $3",
            )
            .bind(store_id.0)
            .bind(key)
            .bind(product_id.0)
            .execute(conn)
            .await?;
            Ok(())
        })
    })
}
