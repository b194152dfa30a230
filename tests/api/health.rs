use crate::helpers::*;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn health_reports_serving_for_server_and_each_service() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in [
        "",
        "holdless.v1.RoutingService",
        "holdless.v1.PlanService",
        "holdless.v1.CustomerService",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "{service} SERVING");
    }
}

#[tokio::test]
async fn reflection_lists_holdless_services_in_v1_and_v1alpha() {
    use tokio_stream::StreamExt;
    let app = spawn_app().await;

    let mut v1 = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
        app.channel.clone(),
    );
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = v1
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.next().await.unwrap().unwrap();
    let names: Vec<String> = match reply.message_response.unwrap() {
        tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(l) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected {other:?}"),
    };
    for want in [
        "holdless.v1.RoutingService",
        "holdless.v1.PlanService",
        "holdless.v1.CustomerService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }

    let mut alpha =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
            app.channel.clone(),
        );
    let req = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = alpha
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.next().await.unwrap().unwrap();
    assert!(format!("{reply:?}").contains("holdless.v1.RoutingService"));
}

#[tokio::test]
async fn graceful_shutdown_returns_ok_and_releases_the_store() {
    let app = spawn_app().await;
    let app = app.restart().await;
    app.stop().await.expect("clean shutdown");
}
