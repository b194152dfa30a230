use crate::helpers::*;
use holdless::api::pb;
use pb::get_customer_request::Lookup;

fn customer(id: &str, phones: &[&str]) -> pb::UpsertCustomerRequest {
    pb::UpsertCustomerRequest {
        customer: Some(pb::Customer {
            customer_id: id.into(),
            display_name: "Grace".into(),
            phone_numbers: phones.iter().map(|p| p.to_string()).collect(),
            status: "at_risk".into(),
            time_zone: "Europe/London".into(),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn upsert_then_get_by_id_and_by_phone_then_delete() {
    let app = spawn_app().await;
    let mut c = app.customers();
    let r = c
        .upsert_customer(customer("g1", &["+442079460958"]))
        .await
        .unwrap()
        .into_inner();
    assert!(r.created);
    let r = c
        .upsert_customer(customer("g1", &["+442079460958"]))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.created);

    let by_id = c
        .get_customer(pb::GetCustomerRequest {
            lookup: Some(Lookup::CustomerId("g1".into())),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(by_id.status, "at_risk");
    assert_eq!(by_id.time_zone, "Europe/London");
    let by_phone = c
        .get_customer(pb::GetCustomerRequest {
            lookup: Some(Lookup::PhoneNumber("+442079460958".into())),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(by_phone.customer_id, "g1");

    c.delete_customer(pb::DeleteCustomerRequest {
        customer_id: "g1".into(),
    })
    .await
    .unwrap();
    let e = c
        .get_customer(pb::GetCustomerRequest {
            lookup: Some(Lookup::CustomerId("g1".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = c
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: "g1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn bad_customers_are_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let mut c = app.customers();
    let mut bad = customer("g2", &["+442079460958", "07946 0958"]);
    bad.customer.as_mut().unwrap().time_zone = "London".into();
    let e = c.upsert_customer(bad).await.unwrap_err();
    assert_eq!(
        violations(&e),
        vec!["customer.phone_numbers[1]", "customer.time_zone"]
    );
    let e = c
        .get_customer(pb::GetCustomerRequest {
            lookup: Some(Lookup::CustomerId("g2".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    let e = c
        .upsert_customer(pb::UpsertCustomerRequest { customer: None })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["customer"]);
    let e = c.upsert_customer(customer("", &[])).await.unwrap_err();
    assert_eq!(violations(&e), vec!["customer.customer_id"]);
}

#[tokio::test]
async fn customers_survive_a_restart() {
    let app = spawn_app().await;
    app.customers()
        .upsert_customer(customer("g3", &["+12125550100"]))
        .await
        .unwrap();
    let app = app.restart().await;
    let got = app
        .customers()
        .get_customer(pb::GetCustomerRequest {
            lookup: Some(Lookup::PhoneNumber("+12125550100".into())),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(got.customer_id, "g3");
}
