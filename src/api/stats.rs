//! `StatsService`: live queue figures for supervisors and wallboards.

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::duration;
use super::pb::{self, stats_service_server::StatsService};
use super::{ready, Ready};

pub struct StatsApi {
    pub ready: Ready,
}

#[tonic::async_trait]
impl StatsService for StatsApi {
    #[instrument(skip_all)]
    async fn get_queue_stats(
        &self,
        request: Request<pb::GetQueueStatsRequest>,
    ) -> Result<Response<pb::GetQueueStatsResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::GetQueueStatsRequest { queue_id } = request.into_inner();
        let stats = holdless.queue_stats((!queue_id.is_empty()).then_some(queue_id.as_str()))?;
        let queues = stats
            .into_iter()
            .map(|(id, s)| pb::QueueStats {
                queue_id: id,
                waiting: s.waiting,
                longest_wait: Some(duration(s.longest_wait)),
                agents_available: s.agents.available,
                agents_reserved: s.agents.reserved,
                agents_busy: s.agents.busy,
                agents_wrap_up: s.agents.wrap_up,
                average_handle_time: Some(duration(std::time::Duration::from_secs_f64(
                    s.aht_secs.max(0.0),
                ))),
                handle_time_samples: s.aht_samples,
                estimated_wait: s.estimated_wait.map(duration),
                ewt_mean_absolute_error: s.ewt_mae.map(duration),
                ewt_samples: s.ewt_samples,
            })
            .collect();
        Ok(Response::new(pb::GetQueueStatsResponse { queues }))
    }
}
