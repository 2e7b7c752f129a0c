//! The role matrix, enforced by the application layer: no access to another store, no
//! privilege escalation through role assignment.

use aggregates::{AccountId, StoreRole};
use shopfront::app::authz::Permission;
use shopfront::app::{App, AppError, CommandContext, Principal};

use crate::helpers::{open_shop, TestDb};

fn principal(account_id: AccountId) -> Principal {
    Principal::session(account_id, uuid::Uuid::nil(), false)
}

async fn person(app: &App, email: &str) -> AccountId {
    app.register_account(&CommandContext::system("test"), Some(email), None, false)
        .await
        .expect("account")
}

#[tokio::test]
async fn roles_are_scoped_to_their_store_and_cannot_be_escalated() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let other_shop = open_shop(&app).await;
    let owner = principal(shop.owner_id);
    let ctx = CommandContext::system("test");
    let (admin, vendor, stranger) = (
        person(&app, "admin@example.com").await,
        person(&app, "vendor@example.com").await,
        person(&app, "stranger@example.com").await,
    );

    app.assign_staff_role_as(&owner, &ctx, shop.store_id, admin, StoreRole::Admin)
        .await
        .expect("an owner makes an admin");
    app.assign_staff_role_as(
        &principal(admin),
        &ctx,
        shop.store_id,
        vendor,
        StoreRole::Vendor,
    )
    .await
    .expect("an admin makes a vendor");

    let forbidden = |result: Result<(), AppError>| matches!(result, Err(AppError::Forbidden(_)));
    // No escalation: an admin makes no owner or admin, and cannot touch the owner.
    assert!(forbidden(
        app.assign_staff_role_as(
            &principal(admin),
            &ctx,
            shop.store_id,
            stranger,
            StoreRole::Owner
        )
        .await
    ));
    assert!(forbidden(
        app.assign_staff_role_as(
            &principal(admin),
            &ctx,
            shop.store_id,
            stranger,
            StoreRole::Admin
        )
        .await
    ));
    assert!(forbidden(
        app.assign_staff_role_as(
            &principal(admin),
            &ctx,
            shop.store_id,
            shop.owner_id,
            StoreRole::Vendor
        )
        .await
    ));
    assert!(forbidden(
        app.assign_staff_role_as(
            &principal(vendor),
            &ctx,
            shop.store_id,
            stranger,
            StoreRole::Vendor
        )
        .await
    ));
    // No access to another store, whatever one's role at home.
    assert!(matches!(
        app.authorize(&owner, other_shop.store_id, Permission::ViewOrders)
            .await,
        Err(AppError::Forbidden(_))
    ));
    assert!(forbidden(
        app.assign_staff_role_as(
            &owner,
            &ctx,
            other_shop.store_id,
            stranger,
            StoreRole::Vendor
        )
        .await
    ));

    assert_eq!(
        app.authorize(&principal(vendor), shop.store_id, Permission::ManageStock)
            .await
            .expect("allowed"),
        StoreRole::Vendor
    );
    assert!(matches!(
        app.authorize(
            &principal(vendor),
            shop.store_id,
            Permission::ReviewReceipts
        )
        .await,
        Err(AppError::Forbidden(_))
    ));
    assert!(matches!(
        app.authorize(&principal(stranger), shop.store_id, Permission::ViewStore)
            .await,
        Err(AppError::Forbidden(_))
    ));
    // A role granted a moment ago counts at once (roles are read from the Store aggregate).
    let store = app
        .stores
        .load(&shop.store_id.to_string())
        .await
        .expect("store");
    assert_eq!(store.role_of(vendor), Some(StoreRole::Vendor));
    assert_eq!(store.role_of(stranger), None);
}
