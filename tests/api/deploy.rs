//! The deploy files, run the way they are deployed. Docker cannot run here, so the
//! container is reproduced from `deploy/Dockerfile` itself: the documented commands of
//! its leading comment (the `#   ` lines) run in `sh` with a `docker` function that
//! records the `docker run` arguments, and the real binary is started with the image's
//! ENTRYPOINT and CMD (or the arguments given to `docker run`), only the image's ENV and
//! the `-e` variables, and the container's paths mapped to the files the image copies
//! in (or to temporary directories for volumes). The listen addresses keep their
//! interface (0.0.0.0) and get port 0.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the container's server may take to say SERVING (it takes well under a
/// second; the bound only keeps a hung start from hanging the suite).
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Dockerfile's instructions: continuation lines joined, comments dropped.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, rest) = current.split_once(' ').expect("instruction with arguments");
                out.push((keyword.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

/// The documented commands: the `#   ` lines of the leading comment block.
fn documented_commands(dockerfile: &str) -> String {
    dockerfile
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("#   "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// What the runtime image (the last stage) is made of.
#[derive(Debug, Default)]
struct Image {
    env: Vec<(String, String)>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
    /// Container path -> where it comes from (`--from=` stage path or context path).
    copies: Vec<(String, String, bool)>,
    volumes: Vec<String>,
}

fn json_array(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("exec-form JSON array expected: {s}: {e}"))
}

fn runtime_image(dockerfile: &str) -> Image {
    let all = instructions(dockerfile);
    let last_from = all.iter().rposition(|(k, _)| k == "FROM").expect("a FROM");
    let mut image = Image::default();
    for (keyword, rest) in &all[last_from + 1..] {
        match keyword.as_str() {
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
                    assert!(!v.contains(['"', '\'']), "unquoted ENV values only: {pair}");
                    image.env.push((k.to_owned(), v.to_owned()));
                }
            }
            "ENTRYPOINT" => image.entrypoint = json_array(rest),
            "CMD" => image.cmd = json_array(rest),
            "HEALTHCHECK" => {
                let (_, cmd) = rest.split_once("CMD ").expect("HEALTHCHECK ... CMD [...]");
                image.healthcheck = json_array(cmd.trim());
            }
            "COPY" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let from_stage = words[0].starts_with("--from=");
                let paths: Vec<&str> = words
                    .iter()
                    .copied()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                assert_eq!(paths.len(), 2, "COPY SRC DST: {rest}");
                image
                    .copies
                    .push((paths[1].to_owned(), paths[0].to_owned(), from_stage));
            }
            "VOLUME" => image
                .volumes
                .extend(rest.split_whitespace().map(String::from)),
            "RUN" | "USER" | "EXPOSE" | "WORKDIR" | "LABEL" | "ARG" | "STOPSIGNAL" => {}
            other => panic!("the test does not know what {other} does to the container"),
        }
    }
    image
}

/// What the documented `docker run` asks for.
#[derive(Debug, Default)]
struct DockerRun {
    env: Vec<(String, String)>,
    /// (host source or volume name, container path)
    mounts: Vec<(String, String)>,
    image: String,
    args: Vec<String>,
}

fn parse_docker_run(args: &[String]) -> DockerRun {
    let mut run = DockerRun::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-d" | "--detach" | "--rm" | "-it" | "-i" | "-t" => {}
            "--name" | "-p" | "--publish" => {
                it.next().expect("option value");
            }
            "-v" | "--volume" => {
                let v = it.next().expect("-v value");
                let mut parts = v.split(':');
                let src = parts.next().expect("volume source");
                let dst = parts.next().expect("volume target");
                run.mounts.push((src.to_owned(), dst.to_owned()));
            }
            "-e" | "--env" => {
                let v = it.next().expect("-e value");
                let (k, val) = v.split_once('=').expect("-e KEY=VALUE");
                run.env.push((k.to_owned(), val.to_owned()));
            }
            other if other.starts_with('-') => {
                panic!("the test does not know what docker run {other} does")
            }
            image => {
                run.image = image.to_owned();
                run.args = it.cloned().collect();
                break;
            }
        }
    }
    assert!(!run.image.is_empty(), "docker run names no image: {args:?}");
    run
}

/// Runs the documented commands in `sh`; returns the last `docker run`'s arguments
/// and `$TOKEN` if the commands set one.
fn run_documented(commands: &str, scratch: &Path) -> (Vec<String>, String) {
    let record = scratch.join("docker-run-args");
    let script = format!(
        "docker() {{ if [ \"$1\" = run ]; then shift; : > \"$RECORD\"; \
         for a in \"$@\"; do printf '%s\\0' \"$a\" >> \"$RECORD\"; done; fi; }}\n\
         {commands}\nprintf %s \"${{TOKEN-}}\"\n"
    );
    let out = Command::new("sh")
        .arg("-ec")
        .arg(&script)
        .env("RECORD", &record)
        .current_dir(scratch)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "the Dockerfile's documented commands failed in sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recorded = std::fs::read(&record).expect("the documented commands include a docker run");
    let args = recorded
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8(a.to_vec()).expect("UTF-8 argument"))
        .collect();
    (args, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Container paths -> host paths, longest container path first.
struct Paths(Vec<(String, PathBuf)>);

impl Paths {
    fn map(&self, value: &str) -> String {
        for (inside, outside) in &self.0 {
            if value == inside {
                return outside.display().to_string();
            }
            if let Some(rest) = value.strip_prefix(&format!("{inside}/")) {
                return outside.join(rest).display().to_string();
            }
        }
        value.to_owned()
    }
}

/// A listen address keeps its interface and gets port 0; other values go through the
/// path map. Returns the container port that was replaced, if any.
fn host_value(value: &str, paths: &Paths) -> (String, Option<u16>) {
    match value.parse::<SocketAddr>() {
        Ok(addr) => (SocketAddr::new(addr.ip(), 0).to_string(), Some(addr.port())),
        Err(_) => (paths.map(value), None),
    }
}

fn holdless() -> Command {
    Command::new(env!("CARGO_BIN_EXE_holdless"))
}

/// The image's own `docker run` line starts a server that answers health SERVING on
/// all interfaces, with authentication on (it used to exit 64: 0.0.0.0 and no
/// principals). Then the image's HEALTHCHECK passes and SIGTERM stops it cleanly.
#[test]
fn documented_docker_run_starts_serving_on_all_interfaces() {
    let dockerfile =
        std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("deploy/Dockerfile");
    let image = runtime_image(&dockerfile);
    let scratch = tempfile::tempdir().unwrap();
    let (docker_args, token) = run_documented(&documented_commands(&dockerfile), scratch.path());
    let run = parse_docker_run(&docker_args);

    // The filesystem the container sees.
    let mut paths = Vec::new();
    for (inside, source, from_stage) in &image.copies {
        let outside = if *from_stage {
            assert!(
                source.ends_with("/release/holdless"),
                "only the binary comes from the build stage: {source}"
            );
            PathBuf::from(env!("CARGO_BIN_EXE_holdless"))
        } else {
            repo().join(source)
        };
        paths.push((inside.clone(), outside));
    }
    for (i, volume) in image
        .volumes
        .iter()
        .chain(run.mounts.iter().map(|(_, dst)| dst))
        .enumerate()
    {
        let host = match run.mounts.iter().find(|(_, dst)| dst == volume) {
            Some((src, _)) if src.starts_with('/') || src.starts_with('.') => PathBuf::from(src),
            _ => {
                let dir = scratch.path().join(format!("volume-{i}"));
                std::fs::create_dir_all(&dir).unwrap();
                dir
            }
        };
        paths.retain(|(inside, _)| inside != volume);
        paths.push((volume.clone(), host));
    }
    paths.sort_by_key(|(inside, _)| std::cmp::Reverse(inside.len()));
    let paths = Paths(paths);

    let mut command = image.entrypoint.clone();
    command.extend(if run.args.is_empty() {
        image.cmd.clone()
    } else {
        run.args.clone()
    });
    let exe = paths.map(&command[0]);
    let mut grpc_port = None;
    let mut child = Command::new(&exe);
    child
        .args(command[1..].iter().map(|a| paths.map(a)))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in image.env.iter().chain(&run.env) {
        let (value, port) = host_value(v, &paths);
        if k == "HOLDLESS__SERVER__LISTEN" {
            grpc_port = port;
        }
        child.env(k, value);
    }
    let mut child = child.spawn().expect("the entrypoint starts");

    // Lines of stderr through a thread, so waiting for SERVING has a bound.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let serving = loop {
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) if line.contains("holdless is SERVING") => break line,
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                panic!("the container's server exited ({status}) instead of serving: {seen:#?}");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("no SERVING within {START_TIMEOUT:?}: {seen:#?}");
            }
        }
    };
    let addr: SocketAddr = serving
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr=")?.parse().ok())
        .unwrap_or_else(|| panic!("no addr= in {serving}"));
    assert!(
        addr.ip().is_unspecified(),
        "listens on all interfaces: {serving}"
    );

    // The image's HEALTHCHECK, its port the one the server got.
    let grpc_port = grpc_port.expect("the image sets HOLDLESS__SERVER__LISTEN");
    let check: Vec<String> = image
        .healthcheck
        .iter()
        .map(|a| {
            paths
                .map(a)
                .replace(&format!(":{grpc_port}"), &format!(":{}", addr.port()))
        })
        .collect();
    let health = Command::new(&check[0]).args(&check[1..]).output().unwrap();
    assert!(
        health.status.success(),
        "HEALTHCHECK {check:?}: {}",
        String::from_utf8_lossy(&health.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&health.stdout), "SERVING\n");

    // Authentication is on: no token is refused; the documented token is accepted.
    let server = format!("http://127.0.0.1:{}", addr.port());
    let anonymous = holdless()
        .args(["plan", "history", "--server", &server])
        .env_remove("HOLDLESS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(anonymous.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("Unauthenticated"));
    if !token.is_empty() {
        let admin = holdless()
            .args(["plan", "history", "--server", &server])
            .env("HOLDLESS_TOKEN", &token)
            .output()
            .unwrap();
        assert!(
            admin.status.success(),
            "{}",
            String::from_utf8_lossy(&admin.stderr)
        );
    }

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "docker stop ends it cleanly");
}

/// The image the manifests and the documented commands use is this release's tag,
/// never `latest` (a restarted pod must not pick up another build).
#[test]
fn deploy_files_pin_this_release_and_keep_their_safety_settings() {
    let tag = format!("holdless:{}", env!("CARGO_PKG_VERSION"));
    let k8s = std::fs::read_to_string(repo().join("deploy/kubernetes/holdless.yaml")).unwrap();
    let images: Vec<&str> = k8s
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image:"))
        .map(str::trim)
        .collect();
    assert!(!images.is_empty());
    assert!(images.iter().all(|i| *i == tag), "{images:?} vs {tag}");
    for needed in [
        "seccompProfile: {type: RuntimeDefault}",
        "startupProbe:",
        "clusterIP: None",
    ] {
        assert!(k8s.contains(needed), "holdless.yaml lacks {needed}");
    }
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let documented = documented_commands(&dockerfile);
    assert!(documented.contains(&format!("-t {tag} ")), "{documented}");
    assert!(documented.trim_end().ends_with(&tag), "{documented}");
    let readme = std::fs::read_to_string(repo().join("deploy/README.md")).unwrap();
    assert!(!readme.contains("holdless:latest"));

    // A bad config exits 64; restarting cannot fix it, so systemd must not loop on it.
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/holdless.service")).unwrap();
    let settings: HashMap<&str, &str> = unit.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(settings.get("RestartPreventExitStatus"), Some(&"64"));
}
