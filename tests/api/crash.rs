//! A real `holdless serve` process killed with SIGKILL while clients request callbacks:
//! after a restart every callback that got an OK exists exactly once, unchanged.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use holdless::api::pb;
use tonic::transport::Channel;

struct Server {
    child: Child,
    addr: String,
}

/// Starts `holdless serve` on a free loopback port over `store`; returns once SERVING.
fn start(store: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdless"))
        .arg("serve")
        .current_dir(store.parent().expect("store has a parent"))
        .env("HOLDLESS__SERVER__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__METRICS__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__CONSOLE__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__STORE__PATH", store)
        .env("HOLDLESS_LOG", "info")
        .env_remove("HOLDLESS__PLAN__FILE")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn holdless");
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.expect("log line");
        if let Some(rest) = line.split("addr=").nth(1) {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.contains("SERVING") {
            break;
        }
    }
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        addr: format!("http://{}", addr.expect("listen address logged")),
    }
}

fn kill9(s: &mut Server) {
    let pid = s.child.id().to_string();
    let _ = Command::new("kill").args(["-KILL", &pid]).status();
    let _ = s.child.wait();
}

async fn client(addr: &str) -> pb::callback_service_client::CallbackServiceClient<Channel> {
    let ch = Channel::from_shared(addr.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    pb::callback_service_client::CallbackServiceClient::new(ch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_callbacks_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // number -> callback id, for every OK reply, across all rounds.
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    for round in 0..3u32 {
        let mut server = start(&store);
        let mut tasks = Vec::new();
        for t in 0..8u32 {
            let mut c = client(&server.addr).await;
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..10_000u32 {
                    let phone = format!("+1212{}{t}{n:05}", round + 2);
                    let req = pb::RequestCallbackRequest {
                        queue_id: "general".into(),
                        phone_number: phone.clone(),
                        request_id: format!("r{round}-{t}-{n}"),
                        ..Default::default()
                    };
                    match c.request_callback(req).await {
                        Ok(r) => {
                            let id = r.into_inner().callback.unwrap().callback_id;
                            acked.lock().unwrap().insert(phone, id);
                        }
                        Err(_) => return, // the server died
                    }
                }
            }));
        }
        // Kill it mid-stream, once a round's worth of callbacks got through.
        let want = 100 * (round as usize + 1);
        while acked.lock().unwrap().len() < want {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        kill9(&mut server);
        for t in tasks {
            let _ = t.await;
        }
    }

    let mut server = start(&store);
    let mut c = client(&server.addr).await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300, "{}", acked.len());
    for (phone, id) in &acked {
        let got = c
            .get_callback(pb::GetCallbackRequest {
                callback_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged callback {id} lost: {e}"))
            .into_inner()
            .callback
            .unwrap();
        assert_eq!(&got.phone_number, phone);
        assert_eq!(got.state, pb::CallbackState::Pending as i32);
    }
    // Exactly once: no number has two callbacks.
    let mut seen = HashSet::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_callbacks(pb::ListCallbacksRequest {
                page_size: 500,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for cb in page.callbacks {
            assert!(
                seen.insert(cb.phone_number.clone()),
                "two callbacks for {}",
                cb.phone_number
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(acked.keys().all(|p| seen.contains(p)));
    kill9(&mut server);
}
