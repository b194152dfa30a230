//! The server on the PostgreSQL backend (`store.backend = "postgres"`): what it
//! acknowledged is there after a restart, and the routing path sees customers written
//! before the restart (the backend's read cache is loaded at open).

use crate::helpers::*;
use holdless::api::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_requested_on_postgres_is_there_after_a_restart() {
    let url = holdless::store::pgtest::test_postgres().await;
    let app = spawn_app_with(on_postgres_store(&url)).await;
    let callbacks = |app: &TestApp| {
        pb::callback_service_client::CallbackServiceClient::new(app.channel.clone())
    };
    let req = pb::RequestCallbackRequest {
        queue_id: "general".into(),
        phone_number: "+12125550142".into(),
        notes: "about the invoice".into(),
        request_id: "req-1".into(),
        ..Default::default()
    };
    let first = callbacks(&app)
        .request_callback(req.clone())
        .await
        .expect("requested")
        .into_inner();
    assert!(first.created);
    let id = first.callback.expect("callback").callback_id;
    app.customers()
        .upsert_customer(pb::UpsertCustomerRequest {
            customer: Some(pb::Customer {
                customer_id: "cust-42".into(),
                phone_numbers: vec!["+442079460958".into()],
                status: "gold".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("customer stored");

    let app = app.restart_with(on_postgres_store(&url)).await;
    let got = callbacks(&app)
        .get_callback(pb::GetCallbackRequest {
            callback_id: id.clone(),
        })
        .await
        .expect("the callback survived the restart")
        .into_inner()
        .callback
        .expect("callback");
    assert_eq!(got.notes, "about the invoice");
    assert_eq!(got.state, pb::CallbackState::Pending as i32);
    // The retry of the first request still gets its first answer, not a second one.
    let retry = callbacks(&app)
        .request_callback(req)
        .await
        .expect("retried")
        .into_inner();
    assert!(!retry.created);
    assert_eq!(retry.callback.expect("callback").callback_id, id);
    // The customer stored before the restart routes the call (the cached read path).
    let d = app.route(call("call-1", "+442079460958")).await;
    assert_eq!(d.queue_id, "priority");
    assert_eq!(d.agent_context.expect("context").customer_id, "cust-42");
    app.stop().await.expect("clean shutdown");
}
