//! The role matrix, enforced by the application layer: no access to another store, no
//! privilege escalation through role assignment, and role checks made on the state a change
//! commits on.

use aggregates::{AccountId, Channel, StoreRole};
use shopfront::app::{grant, App, AppError, Caller, Decided, Grant, StoreAccess};
use shopfront::testing;

use crate::helpers::{open_shop, spawn_app, TestDb};

async fn person(app: &App, email: &str) -> AccountId {
    testing::register_account(app, Some(email), None, false)
        .await
        .expect("account")
}

fn caller(account_id: AccountId) -> Caller {
    testing::caller_for(account_id, Channel::Api)
}

async fn access<P: Grant>(
    app: &App,
    who: AccountId,
    store: aggregates::StoreId,
) -> Result<StoreAccess<P>, AppError> {
    app.authorize::<P>(&caller(who), store).await
}

#[tokio::test]
async fn roles_are_scoped_to_their_store_and_cannot_be_escalated() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let other_shop = open_shop(&app).await;
    let (admin, vendor, stranger) = (
        person(&app, "admin@example.com").await,
        person(&app, "vendor@example.com").await,
        person(&app, "stranger@example.com").await,
    );
    let staff_of = |who| access::<grant::ManageStaff>(&app, who, shop.store_id);

    let owner = staff_of(shop.owner_id)
        .await
        .expect("an owner manages staff");
    app.assign_staff_role(&owner, admin, StoreRole::Admin)
        .await
        .expect("an owner makes an admin");
    let as_admin = staff_of(admin).await.expect("an admin manages staff");
    app.assign_staff_role(&as_admin, vendor, StoreRole::Vendor)
        .await
        .expect("an admin makes a vendor");

    let forbidden =
        |result: Result<Decided<()>, AppError>| matches!(result, Err(AppError::Forbidden(_)));
    // No escalation: an admin makes no owner or admin, and cannot touch the owner.
    assert!(forbidden(
        app.assign_staff_role(&as_admin, stranger, StoreRole::Owner)
            .await
    ));
    assert!(forbidden(
        app.assign_staff_role(&as_admin, stranger, StoreRole::Admin)
            .await
    ));
    assert!(forbidden(
        app.assign_staff_role(&as_admin, shop.owner_id, StoreRole::Vendor)
            .await
    ));
    assert!(forbidden(
        app.revoke_staff_role(&as_admin, shop.owner_id).await
    ));
    // A vendor gets no proof to manage staff at all.
    assert!(matches!(
        staff_of(vendor).await,
        Err(AppError::Forbidden(_))
    ));
    // No access to another store, whatever one's role at home.
    assert!(matches!(
        access::<grant::ViewOrders>(&app, shop.owner_id, other_shop.store_id).await,
        Err(AppError::Forbidden(_))
    ));

    assert_eq!(
        access::<grant::ManageStock>(&app, vendor, shop.store_id)
            .await
            .expect("allowed")
            .role(),
        StoreRole::Vendor
    );
    assert!(matches!(
        access::<grant::ReviewReceipts>(&app, vendor, shop.store_id).await,
        Err(AppError::Forbidden(_))
    ));
    assert!(matches!(
        access::<grant::ViewStore>(&app, stranger, shop.store_id).await,
        Err(AppError::Forbidden(_))
    ));
    // A role granted a moment ago counts at once (roles are read from the Store aggregate).
    let store = testing::load::<aggregates::store::Store>(&app, shop.store_id)
        .await
        .expect("store");
    assert_eq!(store.role_of(vendor), Some(StoreRole::Vendor));
    assert_eq!(store.role_of(stranger), None);
}

#[tokio::test]
async fn a_staff_change_is_judged_on_the_roles_it_commits_on_not_on_the_proof() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let (admin, vendor) = (
        person(&app, "admin@example.com").await,
        person(&app, "vendor@example.com").await,
    );
    let owner = access::<grant::ManageStaff>(&app, shop.owner_id, shop.store_id)
        .await
        .expect("owner");
    app.assign_staff_role(&owner, admin, StoreRole::Admin)
        .await
        .expect("admin");
    // The admin holds a valid proof ...
    let as_admin = access::<grant::ManageStaff>(&app, admin, shop.store_id)
        .await
        .expect("admin's proof");
    // ... and is demoted to vendor before using it.
    app.assign_staff_role(&owner, admin, StoreRole::Vendor)
        .await
        .expect("demoted");
    let stale = app
        .assign_staff_role(&as_admin, vendor, StoreRole::Vendor)
        .await;
    assert!(
        matches!(stale, Err(AppError::Forbidden(_))),
        "a proof made before a demotion does not outlive it: {stale:?}"
    );
    let store = testing::load::<aggregates::store::Store>(&app, shop.store_id)
        .await
        .expect("store");
    assert_eq!(store.role_of(vendor), None);
}

#[tokio::test]
async fn the_stores_one_may_act_in_are_those_whose_role_the_matrix_allows() {
    let app = spawn_app().await;
    let (home, vendor_at, auditor_at) = (
        open_shop(&app.app).await,
        open_shop(&app.app).await,
        open_shop(&app.app).await,
    );
    let someone = person(&app.app, "someone@example.com").await;
    for (shop, role) in [
        (&home, StoreRole::Owner),
        (&vendor_at, StoreRole::Vendor),
        (&auditor_at, StoreRole::Auditor),
    ] {
        let staff = shop.access::<grant::ManageStaff>(&app.app).await;
        app.app
            .assign_staff_role(&staff, someone, role)
            .await
            .expect("assigned");
    }
    app.wait_for_projections().await;
    let sorted = |mut stores: Vec<aggregates::StoreId>| {
        stores.sort();
        stores
    };
    let allowing = |stores: Result<Vec<aggregates::StoreId>, AppError>| stores.expect("stores");
    // Analytics: owners and auditors, not vendors.
    assert_eq!(
        allowing(
            app.app
                .stores_allowing::<grant::ViewAnalytics>(&caller(someone))
                .await
        ),
        sorted(vec![home.store_id, auditor_at.store_id])
    );
    // Placing orders for customers: owners and vendors, not auditors.
    assert_eq!(
        allowing(
            app.app
                .stores_allowing::<grant::PlaceOrdersForCustomers>(&caller(someone))
                .await
        ),
        sorted(vec![home.store_id, vendor_at.store_id])
    );
    // The audit trail: owners and auditors.
    assert_eq!(
        allowing(
            app.app
                .stores_allowing::<grant::ViewAuditTrail>(&caller(someone))
                .await
        ),
        sorted(vec![home.store_id, auditor_at.store_id])
    );
    app.stop().await;
}
