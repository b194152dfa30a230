//! `PlanService`: supervisors read, validate and apply the routing plan.

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::error::invalid_argument;
use super::pb::{self, plan_service_server::PlanService};
use super::{ready, Ready};
use crate::domain::limits::MAX_LABEL_LEN;
use crate::domain::{check_text, limits::MAX_TEXT_LEN};

pub struct PlanApi {
    pub ready: Ready,
}

#[tonic::async_trait]
impl PlanService for PlanApi {
    #[instrument(skip_all)]
    async fn get_plan(
        &self,
        request: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::GetPlanResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::GetPlanRequest { version } = request.into_inner();
        let record = holdless.plan_record(version).await?;
        Ok(Response::new(pb::GetPlanResponse {
            version: Some((&record).into()),
            plan_toml: record.toml,
        }))
    }

    #[instrument(skip_all)]
    async fn validate_plan(
        &self,
        request: Request<pb::ValidatePlanRequest>,
    ) -> Result<Response<pb::ValidatePlanResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::ValidatePlanRequest { plan_toml } = request.into_inner();
        // A plan with issues is a valid question with a "no" answer: OK, not an error.
        let reply = match holdless.validate_plan(&plan_toml) {
            Ok(s) => pb::ValidatePlanResponse {
                valid: true,
                issues: vec![],
                queue_count: s.queues as u32,
                rule_count: s.rules as u32,
                campaign_count: s.campaigns as u32,
            },
            Err(issues) => pb::ValidatePlanResponse {
                valid: false,
                issues: issues
                    .into_iter()
                    .map(|i| pb::PlanIssue {
                        path: i.field,
                        message: i.description,
                    })
                    .collect(),
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    #[instrument(skip_all, fields(expected_version = request.get_ref().expected_version))]
    async fn apply_plan(
        &self,
        request: Request<pb::ApplyPlanRequest>,
    ) -> Result<Response<pb::ApplyPlanResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::ApplyPlanRequest {
            plan_toml,
            expected_version,
            author,
            comment,
        } = request.into_inner();
        let mut v = Vec::new();
        let author = check_text("author", &author, MAX_LABEL_LEN, &mut v);
        let comment = check_text("comment", &comment, MAX_TEXT_LEN, &mut v);
        let (Some(author), Some(comment)) = (author, comment) else {
            return Err(invalid_argument(&v));
        };
        let author = if author.is_empty() {
            "unknown".to_owned()
        } else {
            author
        };
        let record = holdless
            .apply_plan(plan_toml, expected_version, author, comment)
            .await?;
        Ok(Response::new(pb::ApplyPlanResponse {
            version: Some((&record).into()),
        }))
    }
}
