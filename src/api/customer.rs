//! `CustomerService`: customer records kept in sync by the CRM.

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::customer_from_pb;
use super::error::invalid_argument;
use super::pb::{self, customer_service_server::CustomerService, get_customer_request::Lookup};
use super::{actor, ready, Ready};
use crate::domain::{check_id, CustomerId, FieldViolation, PhoneNumber};

pub struct CustomerApi {
    pub ready: Ready,
}

fn customer_id(field: &str, v: &str) -> Result<CustomerId, Status> {
    let mut out = Vec::new();
    check_id(field, v, &mut out)
        .map(CustomerId::new_checked)
        .ok_or_else(|| invalid_argument(&out))
}

#[tonic::async_trait]
impl CustomerService for CustomerApi {
    #[instrument(skip_all)]
    async fn upsert_customer(
        &self,
        request: Request<pb::UpsertCustomerRequest>,
    ) -> Result<Response<pb::UpsertCustomerResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let actor = actor(&request, "", &mut Vec::new());
        let pb::UpsertCustomerRequest { customer } = request.into_inner();
        let customer = customer_from_pb(customer)?;
        let out = holdless.upsert_customer(customer, &actor).await?;
        Ok(Response::new(pb::UpsertCustomerResponse {
            customer: Some(out.customer.into()),
            created: out.created,
        }))
    }

    #[instrument(skip_all)]
    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::GetCustomerResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::GetCustomerRequest { lookup } = request.into_inner();
        let customer = match lookup {
            Some(Lookup::CustomerId(id)) => {
                holdless.customer(&customer_id("customer_id", &id)?).await?
            }
            Some(Lookup::PhoneNumber(p)) => {
                let p = PhoneNumber::parse(&p).map_err(|e| {
                    invalid_argument(&[FieldViolation::new("phone_number", e.to_string())])
                })?;
                holdless.customer_by_phone(p.as_str()).await?
            }
            None => {
                return Err(invalid_argument(&[FieldViolation::new(
                    "lookup",
                    "give customer_id or phone_number",
                )]))
            }
        };
        Ok(Response::new(pb::GetCustomerResponse {
            customer: Some(customer.into()),
        }))
    }

    #[instrument(skip_all)]
    async fn delete_customer(
        &self,
        request: Request<pb::DeleteCustomerRequest>,
    ) -> Result<Response<pb::DeleteCustomerResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let actor = actor(&request, "", &mut Vec::new());
        let pb::DeleteCustomerRequest { customer_id: id } = request.into_inner();
        holdless
            .delete_customer(&customer_id("customer_id", &id)?, &actor)
            .await?;
        Ok(Response::new(pb::DeleteCustomerResponse {}))
    }
}
