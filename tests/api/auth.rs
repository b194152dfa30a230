//! Authentication and authorization through the real server: every method in the
//! access table, with no token, an unknown token, each wrong role and the right role;
//! and every method the protos define must have a table entry.

use holdless::auth::table::METHOD_ROLES;
use holdless::auth::{token_sha256, Role};
use holdless::config::PrincipalSettings;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::helpers::*;

/// One principal per role; the token is the role's name with a suffix.
pub fn token_for(role: Role) -> String {
    format!("{}-secret-token", role.as_str())
}

pub fn principals() -> Vec<PrincipalSettings> {
    Role::ALL
        .iter()
        .map(|r| PrincipalSettings {
            name: format!("{}-principal", r.as_str()),
            token_sha256: token_sha256(&token_for(*r)),
            roles: vec![*r],
        })
        .collect()
}

pub async fn spawn_secured_app() -> TestApp {
    spawn_app_with(|s| s.auth.principals = principals()).await
}

/// Calls `path` with an empty request message. Server streaming is used for every
/// method so that a stream method does not wait for its end; an auth failure arrives
/// before any message either way.
pub async fn raw_call(channel: Channel, path: &str, token: Option<&str>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(());
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.server_streaming(req, path, codec).await.map(|_| ())
}

fn code(r: &Result<(), Status>) -> Code {
    match r {
        Ok(()) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test]
async fn every_method_checks_token_and_role() {
    let app = spawn_secured_app().await;
    for (path, allowed) in METHOD_ROLES {
        let r = raw_call(app.channel.clone(), path, None).await;
        assert_eq!(
            code(&r),
            Code::Unauthenticated,
            "{path} without a token: {r:?}"
        );
        let r = raw_call(app.channel.clone(), path, Some("not-a-known-token")).await;
        assert_eq!(code(&r), Code::Unauthenticated, "{path} wrong token: {r:?}");
        for role in Role::ALL {
            let r = raw_call(app.channel.clone(), path, Some(&token_for(role))).await;
            if allowed.contains(&role) {
                assert!(
                    !matches!(code(&r), Code::Unauthenticated | Code::PermissionDenied),
                    "{path} as {role:?} must pass the gate: {r:?}"
                );
            } else {
                assert_eq!(
                    code(&r),
                    Code::PermissionDenied,
                    "{path} as {role:?}: {r:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn every_proto_method_has_an_access_table_entry() {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(holdless::api::FILE_DESCRIPTOR_SET)
        .expect("descriptor set decodes");
    let mut methods = Vec::new();
    for file in &set.file {
        let package = file.package();
        if !package.starts_with("holdless.") {
            continue;
        }
        for service in &file.service {
            for method in &service.method {
                methods.push(format!("/{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    // Guard against a decoding slip that finds nothing: the services of the first
    // release are all there.
    assert!(methods.len() >= 10, "too few methods found: {methods:?}");
    assert!(methods.contains(&"/holdless.v1.RoutingService/RouteCall".to_string()));
    let missing: Vec<&String> = methods
        .iter()
        .filter(|m| !METHOD_ROLES.iter().any(|(p, _)| p == m))
        .collect();
    assert!(
        missing.is_empty(),
        "methods without an entry in src/auth/table.rs: {missing:?}"
    );
}

#[tokio::test]
async fn health_and_reflection_stay_open_and_unlisted_methods_are_refused() {
    let app = spawn_secured_app().await;
    let r = raw_call(app.channel.clone(), "/grpc.health.v1.Health/Check", None).await;
    assert_eq!(code(&r), Code::Ok, "{r:?}");
    // An unknown method of a known service: refused by the gate, not UNIMPLEMENTED.
    let sup = token_for(Role::Supervisor);
    let r = raw_call(
        app.channel.clone(),
        "/holdless.v1.PlanService/DropEverything",
        Some(&sup),
    )
    .await;
    assert_eq!(code(&r), Code::PermissionDenied, "{r:?}");
}

#[tokio::test]
async fn right_token_reaches_the_service() {
    let app = spawn_secured_app().await;
    let mut req = tonic::Request::new(call("auth-1", "+442079460958"));
    let token = format!("Bearer {}", token_for(Role::Telephony));
    req.metadata_mut()
        .insert("authorization", token.parse().unwrap());
    let decision = app
        .routing()
        .route_call(req)
        .await
        .expect("telephony may route")
        .into_inner()
        .decision
        .expect("decision");
    assert!(!decision.queue_id.is_empty());
}

#[tokio::test]
async fn without_principals_the_table_is_still_enforced() {
    let app = spawn_app().await;
    let r = raw_call(
        app.channel.clone(),
        "/holdless.v1.RoutingService/RouteCall",
        None,
    )
    .await;
    assert_eq!(code(&r), Code::InvalidArgument, "{r:?}");
    let r = raw_call(app.channel.clone(), "/holdless.v1.Nope/Nothing", None).await;
    assert_eq!(code(&r), Code::PermissionDenied, "{r:?}");
}

/// How many are shed depends on scheduling (the deterministic shedding test is the
/// gate's unit test); what must always hold: every call is answered, OK or UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_concurrency_limit_is_answered_never_queued_forever() {
    const LIMIT: usize = 2;
    let app = spawn_app_with(|s| s.server.max_concurrent_requests = LIMIT).await;
    // Several connections, so that calls reach the server side by side.
    let mut channels = Vec::new();
    for _ in 0..4 {
        let endpoint = Channel::from_shared(format!("http://{}", app.addr)).unwrap();
        channels.push(endpoint.connect().await.expect("connect"));
    }
    let calls = (0..10 * LIMIT).map(|i| {
        let mut client = holdless::api::pb::routing_service_client::RoutingServiceClient::new(
            channels[i % channels.len()].clone(),
        );
        tokio::spawn(async move {
            client
                .route_call(call(&format!("burst-{i}"), "+442079460958"))
                .await
                .map(|_| ())
        })
    });
    let all = futures_join(calls.collect()).await;
    let mut ok = 0;
    for r in all {
        match r {
            Ok(()) => ok += 1,
            Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        }
    }
    assert!(ok >= 1, "no call got through");
}

/// Awaits every task, at most 30 s in all (a hang fails the test).
async fn futures_join(
    tasks: Vec<tokio::task::JoinHandle<Result<(), Status>>>,
) -> Vec<Result<(), Status>> {
    let all = async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), all)
        .await
        .expect("every call answered")
}
