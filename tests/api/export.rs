//! `holdless export` and `holdless import` through the real binary: a server's state
//! (plan versions, customers, open callbacks) survives export from its stopped store
//! and import into a new one; a store held by a running server is refused; a bad file
//! is refused whole, naming its line, and leaves the target untouched.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use holdless::api::pb;
use tonic::transport::Channel;

/// A `holdless serve` process on a free loopback port.
struct Served {
    child: Child,
    channel: Channel,
}

fn holdless(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_holdless"));
    // No ./holdless.toml and no inherited settings: only what each test sets.
    c.current_dir(dir);
    for var in [
        "HOLDLESS__PLAN__FILE",
        "HOLDLESS__STORE__PATH",
        "HOLDLESS__STORE__BACKEND",
        "HOLDLESS__STORE__POSTGRES__URL",
        "HOLDLESS_SERVER",
        "HOLDLESS_TOKEN",
    ] {
        c.env_remove(var);
    }
    c
}

/// Starts `holdless serve` over the sled store in `store`; returns once it logs
/// SERVING.
async fn serve(dir: &Path, store: &Path) -> Served {
    serve_on(
        dir,
        &[("HOLDLESS__STORE__PATH", store.display().to_string())],
    )
    .await
}

/// The settings that put a command on the PostgreSQL database `url`.
fn on_postgres(url: &str) -> [(&'static str, String); 2] {
    [
        ("HOLDLESS__STORE__BACKEND", "postgres".into()),
        ("HOLDLESS__STORE__POSTGRES__URL", url.into()),
    ]
}

/// Starts `holdless serve` with the store settings `store` (environment variables).
async fn serve_on(dir: &Path, store: &[(&str, String)]) -> Served {
    let mut cmd = holdless(dir);
    cmd.envs(store.iter().map(|(k, v)| (k, v)));
    cmd.arg("serve")
        .env("HOLDLESS__SERVER__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__METRICS__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__CONSOLE__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS_LOG", "info")
        .stderr(Stdio::piped());
    let (child, addr) = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("spawn holdless serve");
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = BufReader::new(stderr).lines();
        let mut addr = None;
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let line = line.expect("log line");
            if let Some(rest) = line.split("addr=").nth(1) {
                addr = addr.or_else(|| rest.split_whitespace().next().map(str::to_owned));
            }
            let serving = line.contains("SERVING");
            seen.push(line);
            if serving {
                break;
            }
        }
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let addr = addr.unwrap_or_else(|| panic!("no listen address logged: {seen:#?}"));
        (child, addr)
    })
    .await
    .expect("start task");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    Served { child, channel }
}

impl Served {
    fn callbacks(&self) -> pb::callback_service_client::CallbackServiceClient<Channel> {
        pb::callback_service_client::CallbackServiceClient::new(self.channel.clone())
    }
    fn plans(&self) -> pb::plan_service_client::PlanServiceClient<Channel> {
        pb::plan_service_client::PlanServiceClient::new(self.channel.clone())
    }
    fn customers(&self) -> pb::customer_service_client::CustomerServiceClient<Channel> {
        pb::customer_service_client::CustomerServiceClient::new(self.channel.clone())
    }

    /// SIGTERM, then waits for a clean exit (the store flushed and unlocked).
    async fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = tokio::task::spawn_blocking(move || {
            let killed = Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("run kill");
            assert!(killed.success());
            self.child.wait().expect("wait for holdless")
        })
        .await
        .expect("stop task");
        assert_eq!(status.code(), Some(0));
    }
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run holdless"))
        .await
        .expect("command task")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn export(dir: &Path, store: &Path, out: &Path) -> Output {
    let mut c = holdless(dir);
    c.args(["export", "--out"])
        .arg(out)
        .env("HOLDLESS__STORE__PATH", store);
    run(c).await
}

/// Imports `file` into `store`, naming the store in a config file (`--config`).
async fn import(dir: &Path, store: &Path, file: &Path) -> Output {
    let config = dir.join(format!(
        "import-{}.toml",
        store
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("store")
    ));
    std::fs::write(
        &config,
        format!("[store]\npath = {:?}\n", store.display().to_string()),
    )
    .expect("write config");
    let mut c = holdless(dir);
    c.arg("import").arg(file).arg("--config").arg(&config);
    run(c).await
}

/// A callback as a client sees it, without the live parts (place in line, wait).
fn steady(mut c: pb::Callback) -> pb::Callback {
    c.position = 0;
    c.estimated_wait = None;
    c
}

async fn request(s: &Served, phone: &str, customer: &str) -> pb::Callback {
    s.callbacks()
        .request_callback(pb::RequestCallbackRequest {
            queue_id: "general".into(),
            phone_number: phone.into(),
            customer_id: customer.into(),
            notes: format!("call {phone} back"),
            ..Default::default()
        })
        .await
        .expect("callback requested")
        .into_inner()
        .callback
        .expect("callback")
}

/// Whether asking for a callback to `phone` in `general` creates one (not when an
/// open one for the number is there: the dedupe index found it).
async fn asked_again_creates(s: &Served, phone: &str) -> bool {
    s.callbacks()
        .request_callback(pb::RequestCallbackRequest {
            queue_id: "general".into(),
            phone_number: phone.into(),
            ..Default::default()
        })
        .await
        .expect("request")
        .into_inner()
        .created
}

async fn all_callbacks(s: &Served) -> Vec<pb::Callback> {
    s.callbacks()
        .list_callbacks(pb::ListCallbacksRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("list callbacks")
        .into_inner()
        .callbacks
        .into_iter()
        .map(steady)
        .collect()
}

async fn versions(s: &Served) -> pb::ListPlanVersionsResponse {
    s.plans()
        .list_plan_versions(pb::ListPlanVersionsRequest {
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .expect("list versions")
        .into_inner()
}

async fn active_plan(s: &Served) -> String {
    s.plans()
        .get_plan(pb::GetPlanRequest { version: 0 })
        .await
        .expect("get plan")
        .into_inner()
        .plan_toml
}

async fn customer(s: &Served, id: &str) -> pb::Customer {
    s.customers()
        .get_customer(pb::GetCustomerRequest {
            lookup: Some(pb::get_customer_request::Lookup::CustomerId(id.into())),
        })
        .await
        .expect("get customer")
        .into_inner()
        .customer
        .expect("customer")
}

/// Builds store A through a real server: plan versions 1-3 (3 active), two
/// customers, two pending callbacks and a cancelled one. Returns what a client saw.
struct Seen {
    callbacks: Vec<pb::Callback>,
    cancelled_id: String,
    versions: pb::ListPlanVersionsResponse,
    plan: String,
    customers: Vec<pb::Customer>,
}

async fn populate(dir: &Path, store: &Path) -> Seen {
    let a = serve(dir, store).await;
    let base = active_plan(&a).await;
    for (n, expected) in [(2u64, 1u64), (3, 2)] {
        a.plans()
            .apply_plan(pb::ApplyPlanRequest {
                plan_toml: format!("{base}\n# revision {n}\n"),
                expected_version: expected,
                author: "sam".into(),
                comment: format!("revision {n}"),
                request_id: String::new(),
            })
            .await
            .expect("plan applied");
    }
    for (id, phone, tz) in [
        ("cust-ada", "+442079460958", "Europe/London"),
        ("cust-bob", "+12125550143", ""),
    ] {
        a.customers()
            .upsert_customer(pb::UpsertCustomerRequest {
                customer: Some(pb::Customer {
                    customer_id: id.into(),
                    display_name: format!("{id} name"),
                    phone_numbers: vec![phone.into()],
                    status: "gold".into(),
                    language: "en".into(),
                    time_zone: tz.into(),
                    last_agent_id: "agent-7".into(),
                    notes: "Asked about the annual plan.\nPrefers mornings.".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect("customer upserted");
    }
    request(&a, "+12125550142", "").await;
    request(&a, "+12125550143", "cust-bob").await;
    let cancelled = request(&a, "+12125550144", "").await;
    a.callbacks()
        .cancel_callback(pb::CancelCallbackRequest {
            callback_id: cancelled.callback_id.clone(),
            reason: "customer".into(),
        })
        .await
        .expect("cancelled");
    let callbacks: Vec<pb::Callback> = all_callbacks(&a)
        .await
        .into_iter()
        .filter(|c| c.callback_id != cancelled.callback_id)
        .collect();
    assert_eq!(callbacks.len(), 2);
    let seen = Seen {
        callbacks,
        cancelled_id: cancelled.callback_id,
        versions: versions(&a).await,
        plan: active_plan(&a).await,
        customers: vec![
            customer(&a, "cust-ada").await,
            customer(&a, "cust-bob").await,
        ],
    };
    assert_eq!(seen.versions.active_version, 3);
    a.stop().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_restores_plans_customers_and_open_callbacks() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let (store_a, store_b) = (dir.join("a"), dir.join("b"));
    let file = dir.join("backup.jsonl");
    let seen = populate(dir, &store_a).await;

    let out = export(dir, &store_a, &file).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "exported plans=3 customers=2 callbacks=2\n"
    );
    let lines = std::fs::read_to_string(&file).expect("export file");
    assert!(
        !lines.contains(&seen.cancelled_id),
        "a cancelled callback was exported"
    );

    let out = import(dir, &store_b, &file).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "imported plans=3 customers=2 callbacks=2\n"
    );

    let b = serve(dir, &store_b).await;
    assert_eq!(all_callbacks(&b).await, seen.callbacks);
    let gone = b
        .callbacks()
        .get_callback(pb::GetCallbackRequest {
            callback_id: seen.cancelled_id.clone(),
        })
        .await
        .expect_err("the cancelled callback stays behind");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    assert_eq!(versions(&b).await, seen.versions);
    assert_eq!(active_plan(&b).await, seen.plan);
    assert_eq!(
        vec![
            customer(&b, "cust-ada").await,
            customer(&b, "cust-bob").await
        ],
        seen.customers
    );
    // The dedupe index came along: asking again returns the restored callback.
    assert!(!asked_again_creates(&b, "+12125550142").await);
    b.stop().await;

    // B holds data now: a second import is refused and changes nothing.
    let out = import(dir, &store_b, &file).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already holds plans, customers, callbacks"),
        "{}",
        text(&out.stderr)
    );
}

/// A large export is written in durable batches (`--batch`, small here so that five
/// callbacks take three batches), read from standard input too, which is read twice:
/// every callback arrives once, with its dedupe entry, and the plans and customers
/// after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_in_many_batches_from_standard_input_restores_every_callback() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let (store_a, store_b) = (dir.join("a"), dir.join("b"));
    let file = dir.join("backup.jsonl");
    let seen = populate(dir, &store_a).await;
    let a = serve(dir, &store_a).await;
    for phone in ["+12125550150", "+12125550151", "+12125550152"] {
        request(&a, phone, "").await;
    }
    let callbacks = all_callbacks(&a).await;
    a.stop().await;
    assert_eq!(callbacks.len(), 6, "five open, one cancelled");
    let out = export(dir, &store_a, &file).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let config = dir.join("b.toml");
    std::fs::write(
        &config,
        format!("[store]\npath = {:?}\n", store_b.display().to_string()),
    )
    .expect("write config");
    let mut c = holdless(dir);
    c.args(["import", "-", "--batch", "2", "--config"])
        .arg(&config)
        .stdin(std::fs::File::open(&file).expect("export file"));
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "imported plans=3 customers=2 callbacks=5\n"
    );

    let b = serve(dir, &store_b).await;
    let open: Vec<pb::Callback> = callbacks
        .into_iter()
        .filter(|c| c.callback_id != seen.cancelled_id)
        .collect();
    assert_eq!(all_callbacks(&b).await, open);
    assert_eq!(versions(&b).await, seen.versions);
    for phone in ["+12125550142", "+12125550152"] {
        assert!(!asked_again_creates(&b, phone).await, "{phone} got a twin");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_refuses_a_store_held_by_a_running_server() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let store = dir.join("a");
    let file = dir.join("backup.jsonl");
    let a = serve(dir, &store).await;
    let out = export(dir, &store, &file).await;
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("is in use by a running server"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!file.exists());
    // Import checks the file first, then finds the store locked just the same.
    let empty = write_lines(
        dir,
        "empty.jsonl",
        &[
            r#"{"kind":"header","format":"holdless-export","version":1,"exported_at":"2026-11-25T15:00:00Z"}"#,
            r#"{"kind":"end","counts":{"plans":0,"customers":0,"callbacks":0}}"#,
        ],
    );
    let out = import(dir, &store, &empty).await;
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is in use by a running server"));
    a.stop().await;
    // A store that does not exist is not created by export.
    let out = export(dir, &dir.join("nothing"), &file).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no holdless store"));
    assert!(!dir.join("nothing").exists());
}

/// Writes `lines` as an export file named `name`.
fn write_lines(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_damaged_file_imports_nothing_and_names_the_line() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let store_a = dir.join("a");
    let file = dir.join("backup.jsonl");
    populate(dir, &store_a).await;
    let out = export(dir, &store_a, &file).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let good = std::fs::read_to_string(&file).expect("export file");
    let lines: Vec<&str> = good.lines().collect();
    assert_eq!(lines.len(), 9, "{good}");

    // Truncated: the end line is missing.
    let truncated = write_lines(dir, "truncated.jsonl", &lines[..lines.len() - 1]);
    let target = dir.join("t1");
    let out = import(dir, &target, &truncated).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("truncated.jsonl: the file ends after line 8 without its end line"),
        "{}",
        text(&out.stderr)
    );
    assert!(!target.exists(), "a refused import created the store");

    // A customer line with a number that is not E.164.
    let mut damaged = lines.clone();
    let bad = lines[4].replace("+442079460958", "020 7946 0958");
    assert_ne!(bad, lines[4], "line 5 is the first customer");
    damaged[4] = &bad;
    let damaged = write_lines(dir, "damaged.jsonl", &damaged);
    let target = dir.join("t2");
    let out = import(dir, &target, &damaged).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("damaged.jsonl: line 5: customer cust-ada: phones[0]"),
        "{stderr}"
    );
    assert!(!target.exists(), "a refused import created the store");

    // The file itself still imports, so the refusals were about the damage.
    let target = dir.join("t3");
    let out = import(dir, &target, &file).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A center moving from sled to PostgreSQL: export the stopped sled store, import the
/// file into an empty PostgreSQL database, serve from it. Everything the sled server
/// held comes back, a second import is refused, and an export from PostgreSQL holds
/// the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_export_imports_into_postgres_and_serves_the_same_state() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let store_a = dir.join("a");
    let file = dir.join("backup.jsonl");
    let seen = populate(dir, &store_a).await;
    let out = export(dir, &store_a, &file).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let url = holdless::store::pgtest::test_postgres().await;
    let mut c = holdless(dir);
    c.arg("import").arg(&file).envs(on_postgres(&url));
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "imported plans=3 customers=2 callbacks=2\n"
    );

    let b = serve_on(dir, &on_postgres(&url)).await;
    assert_eq!(all_callbacks(&b).await, seen.callbacks);
    assert_eq!(versions(&b).await, seen.versions);
    assert_eq!(active_plan(&b).await, seen.plan);
    assert_eq!(
        vec![
            customer(&b, "cust-ada").await,
            customer(&b, "cust-bob").await
        ],
        seen.customers
    );
    b.stop().await;

    let mut c = holdless(dir);
    c.arg("import").arg(&file).envs(on_postgres(&url));
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already holds plans, customers, callbacks"),
        "{}",
        text(&out.stderr)
    );

    let again = dir.join("from-postgres.jsonl");
    let mut c = holdless(dir);
    c.args(["export", "--out"])
        .arg(&again)
        .envs(on_postgres(&url));
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The same records; only the header's export time differs.
    let records = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .expect("export file")
            .lines()
            .skip(1)
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(records(&again), records(&file));
}
