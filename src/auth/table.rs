//! The one method -> roles table. Every RPC holdless serves must be listed here: the
//! gate refuses a method that is missing (default deny), and a black-box test derives
//! every method from the proto descriptors and fails if one has no entry.
//!
//! Entries for methods that do not exist yet (planned in docs/ARCHITECTURE.md, "Roles") are
//! harmless: the router answers UNIMPLEMENTED once the caller has passed the gate.

use super::Role;

const TELEPHONY: &[Role] = &[Role::Telephony];
const SUPERVISOR: &[Role] = &[Role::Supervisor];
const CUSTOMER: &[Role] = &[Role::Customer];
const CUSTOMER_OR_SUPERVISOR: &[Role] = &[Role::Customer, Role::Supervisor];
/// `RequestCallback`: customer channels ask by number, the telephony platform's IVR
/// turns a live call into a callback. A method-level table cannot tell the two apart,
/// so the handler refuses `call_id` from a customer-only principal and a request
/// without `call_id` from a telephony-only one.
const CALLBACK_REQUESTERS: &[Role] = &[Role::Customer, Role::Telephony, Role::Supervisor];

/// gRPC services open to anyone, without a token: health (probes and load balancers
/// must reach it) and server reflection (it only describes the public protos).
pub const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Full gRPC method path -> the roles allowed to call it (any one suffices).
pub const METHOD_ROLES: &[(&str, &[Role])] = &[
    // The telephony platform: routing and live events.
    ("/holdless.v1.RoutingService/RouteCall", TELEPHONY),
    ("/holdless.v1.RoutingService/ReportCallEvent", TELEPHONY),
    ("/holdless.v1.RoutingService/ReportAgentState", TELEPHONY),
    // The dialer: callback dispatches.
    ("/holdless.v1.DispatchService/WatchDispatches", TELEPHONY),
    (
        "/holdless.v1.DispatchService/ReportDispatchOutcome",
        TELEPHONY,
    ),
    // Customers (web page, app) manage their callback; supervisors too. The IVR
    // (telephony) requests one from a live call.
    (
        "/holdless.v1.CallbackService/RequestCallback",
        CALLBACK_REQUESTERS,
    ),
    (
        "/holdless.v1.CallbackService/GetCallback",
        CUSTOMER_OR_SUPERVISOR,
    ),
    (
        "/holdless.v1.CallbackService/ListCallbacks",
        CUSTOMER_OR_SUPERVISOR,
    ),
    (
        "/holdless.v1.CallbackService/RescheduleCallback",
        CUSTOMER_OR_SUPERVISOR,
    ),
    (
        "/holdless.v1.CallbackService/CancelCallback",
        CUSTOMER_OR_SUPERVISOR,
    ),
    (
        "/holdless.v1.CallbackService/ListSlots",
        CUSTOMER_OR_SUPERVISOR,
    ),
    // Supervisors: the routing plan.
    ("/holdless.v1.PlanService/GetPlan", SUPERVISOR),
    ("/holdless.v1.PlanService/ValidatePlan", SUPERVISOR),
    ("/holdless.v1.PlanService/SimulatePlan", SUPERVISOR),
    ("/holdless.v1.PlanService/SimulateDay", SUPERVISOR),
    ("/holdless.v1.PlanService/ApplyPlan", SUPERVISOR),
    ("/holdless.v1.PlanService/ListPlanVersions", SUPERVISOR),
    ("/holdless.v1.PlanService/RollbackPlan", SUPERVISOR),
    ("/holdless.v1.PlanService/ListAudit", SUPERVISOR),
    // Supervisors (the CRM sync holds a supervisor token): customers.
    ("/holdless.v1.CustomerService/UpsertCustomer", SUPERVISOR),
    ("/holdless.v1.CustomerService/GetCustomer", SUPERVISOR),
    ("/holdless.v1.CustomerService/DeleteCustomer", SUPERVISOR),
    // Supervisors: statistics; customers: surveys.
    ("/holdless.v1.StatsService/GetQueueStats", SUPERVISOR),
    ("/holdless.v1.StatsService/WatchQueueStats", SUPERVISOR),
    ("/holdless.v1.StatsService/GetKpiReport", SUPERVISOR),
    ("/holdless.v1.StatsService/GetStaffingPlan", SUPERVISOR),
    ("/holdless.v1.StatsService/SubmitSurvey", CUSTOMER),
];

/// The roles allowed to call `path`, or `None` when the method is not in the table.
pub fn roles_for(path: &str) -> Option<&'static [Role]> {
    METHOD_ROLES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, roles)| *roles)
}

/// Whether `path` (`/package.Service/Method`) belongs to an open service.
pub fn is_open(path: &str) -> bool {
    let service = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map(|(s, _)| s);
    service.is_some_and(|s| OPEN_SERVICES.contains(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_listed_once_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for (path, roles) in METHOD_ROLES {
            assert!(seen.insert(*path), "{path} is listed twice");
            assert!(!roles.is_empty(), "{path} allows no role");
            let rest = path.strip_prefix("/holdless.v1.").expect("holdless path");
            let (service, method) = rest.split_once('/').expect("service/method");
            assert!(service.ends_with("Service") && !method.is_empty(), "{path}");
        }
    }

    #[test]
    fn open_services_are_health_and_reflection_only() {
        assert!(is_open("/grpc.health.v1.Health/Check"));
        assert!(is_open(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_open("/holdless.v1.RoutingService/RouteCall"));
        assert!(!is_open("/grpc.health.v1.Healthy/Check"));
        assert!(!is_open("grpc.health.v1.Health"));
    }

    /// The roles of docs/ARCHITECTURE.md ("Roles"), service by service.
    #[test]
    fn every_entry_follows_the_design_roles() {
        for (path, roles) in METHOD_ROLES {
            let service = path.split('/').nth(1).expect("service");
            let expected: &[Role] = match service {
                "holdless.v1.RoutingService" | "holdless.v1.DispatchService" => TELEPHONY,
                "holdless.v1.PlanService" | "holdless.v1.CustomerService" => SUPERVISOR,
                "holdless.v1.CallbackService" if path.ends_with("/RequestCallback") => {
                    CALLBACK_REQUESTERS
                }
                "holdless.v1.CallbackService" => CUSTOMER_OR_SUPERVISOR,
                "holdless.v1.StatsService" if path.ends_with("/SubmitSurvey") => CUSTOMER,
                "holdless.v1.StatsService" => SUPERVISOR,
                other => panic!("{other} has no role in the design"),
            };
            assert_eq!(*roles, expected, "{path}");
        }
    }

    #[test]
    fn roles_follow_the_design() {
        assert_eq!(
            roles_for("/holdless.v1.RoutingService/RouteCall"),
            Some(TELEPHONY)
        );
        assert_eq!(
            roles_for("/holdless.v1.StatsService/SubmitSurvey"),
            Some(CUSTOMER)
        );
        // Wallboards show every queue's figures: supervisors only.
        assert_eq!(
            roles_for("/holdless.v1.StatsService/WatchQueueStats"),
            Some(SUPERVISOR)
        );
        assert_eq!(
            roles_for("/holdless.v1.CallbackService/RequestCallback"),
            Some(&[Role::Customer, Role::Telephony, Role::Supervisor][..])
        );
        assert_eq!(
            roles_for("/holdless.v1.CallbackService/CancelCallback"),
            Some(CUSTOMER_OR_SUPERVISOR)
        );
        assert_eq!(roles_for("/holdless.v1.RoutingService/Nope"), None);
    }
}
