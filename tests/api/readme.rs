//! The README's examples are real runs, and stay real.
//!
//! Convention: every ```` ```console ```` block of `README.md` is a session against a
//! fresh server (port 0, temporary store, the manual clock at [`WEEKDAY_NOON`], the
//! built-in example plan). A line starting with `$ ` is a shell command (a trailing `\`
//! continues it on the next line); the lines after it, up to the next command, are what
//! it prints (stdout and stderr together; trailing blank lines do not count). Commands
//! run in `sh` in a scratch directory holding a copy of `examples/`, with the built
//! `holdless` first on `PATH` and `HOLDLESS_SERVER` pointing at the server; each must
//! exit 0. Before comparing, ULIDs, timestamps and hashes are masked in both, and
//! trailing spaces dropped. Other fenced blocks (```` ```sh ````, ```` ```text ````)
//! are not run.
//!
//! `HOLDLESS_BLESS_README=1 cargo test --test api readme` rewrites every block with
//! what its commands print now, unmasked, so the hashes and times a reader sees belong
//! to one real run (the ULIDs of request ids change with each bless; nothing else
//! does, the clock being the manual one), and regenerates `examples/billing.toml` from
//! the example plan. The commands themselves are kept as written.
//!
//! The README's API table is checked against the protos and the auth table here too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use regex::Regex;

use crate::helpers::*;

const BLESS_ENV: &str = "HOLDLESS_BLESS_README";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn blessing() -> bool {
    std::env::var_os(BLESS_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// One `$ command` and what it prints.
#[derive(Debug, Clone)]
struct Step {
    /// The command as written, continuation lines included (without the `$ `).
    command: String,
    output: String,
}

/// A ```console block: its line range in the README (the lines between the fences).
#[derive(Debug)]
struct Block {
    body: std::ops::Range<usize>,
    steps: Vec<Step>,
}

fn parse_steps(lines: &[&str]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(first) = line.strip_prefix("$ ") {
            let mut command = first.to_owned();
            while command.ends_with('\\') && i + 1 < lines.len() {
                i += 1;
                command.push('\n');
                command.push_str(lines[i]);
            }
            steps.push(Step {
                command,
                output: String::new(),
            });
        } else {
            let step = steps
                .last_mut()
                .unwrap_or_else(|| panic!("console block output before any `$ ` line: {line}"));
            step.output.push_str(line);
            step.output.push('\n');
        }
        i += 1;
    }
    for s in &mut steps {
        s.output = trim_output(&s.output);
    }
    steps
}

/// Trailing spaces of each line and trailing blank lines dropped; ends with `\n`
/// unless empty.
fn trim_output(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim_end).collect();
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    lines[..end].iter().map(|l| format!("{l}\n")).collect()
}

fn console_blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() == "```console" {
            let start = i + 1;
            let len = lines[start..]
                .iter()
                .position(|l| l.trim_end() == "```")
                .expect("a console block is closed");
            let body = start..start + len;
            blocks.push(Block {
                steps: parse_steps(&lines[body.clone()]),
                body,
            });
            i = start + len;
        }
        i += 1;
    }
    blocks
}

fn render(steps: &[Step]) -> String {
    let mut out = String::new();
    for (i, s) in steps.iter().enumerate() {
        // A blank line after a command's output, before the next command.
        if i > 0 && !steps[i - 1].output.is_empty() {
            out.push('\n');
        }
        out.push_str("$ ");
        out.push_str(&s.command);
        out.push('\n');
        out.push_str(&s.output);
    }
    out
}

/// ULIDs, timestamps and hashes become placeholders: they differ from run to run (or
/// with every edit of the example plan) without the example being wrong.
fn mask(s: &str) -> String {
    let ulid = Regex::new(r"\b[0-9A-HJKMNP-TV-Z]{26}\b").unwrap();
    let time =
        Regex::new(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?")
            .unwrap();
    let hash = Regex::new(r"\b[0-9a-f]{12,64}\b").unwrap();
    let s = ulid.replace_all(s, "<ULID>");
    let s = time.replace_all(&s, "<TIME>");
    hash.replace_all(&s, "<HASH>").into_owned()
}

/// A scratch working directory with a copy of `examples/`.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples");
    std::fs::create_dir(&examples).unwrap();
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), examples.join(entry.file_name())).unwrap();
    }
    dir
}

/// Runs one block's commands against a fresh server; returns what each printed.
async fn run_block(block: &Block) -> Vec<Step> {
    let app = spawn_app().await;
    let server = format!("http://{}", app.addr);
    let dir = scratch();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_holdless"));
    let bin_dir = bin.parent().expect("binary directory").to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let mut out = Vec::new();
    for step in &block.steps {
        let command = step.command.clone();
        let (server, path, cwd) = (server.clone(), path.clone(), dir.path().to_path_buf());
        let result = tokio::task::spawn_blocking(move || {
            Command::new("sh")
                .arg("-c")
                .arg(format!("{{ {command}\n}} 2>&1"))
                .current_dir(cwd)
                .env("PATH", path)
                .env("HOLDLESS_SERVER", server)
                .env_remove("HOLDLESS_TOKEN")
                .env_remove("HOLDLESS_CA_CERT")
                .env_remove("HOLDLESS_LOG")
                .output()
                .expect("sh runs")
        })
        .await
        .unwrap();
        let printed = String::from_utf8_lossy(&result.stdout).into_owned();
        assert!(
            result.status.success(),
            "README command `{}` exited {:?}:\n{printed}",
            step.command,
            result.status.code()
        );
        out.push(Step {
            command: step.command.clone(),
            output: trim_output(&printed),
        });
    }
    app.stop().await.expect("clean shutdown");
    out
}

/// The billing example is the example plan with billing calls sent to `general`: one
/// line, so `plan diff` in the README shows one change.
fn billing_example() -> String {
    let plan = std::fs::read_to_string(repo().join("deploy/plan.example.toml")).unwrap();
    let from = "intents = [\"billing\", \"invoice\"]\n[rules.action]\nqueue = \"billing\"\n";
    assert_eq!(
        plan.matches(from).count(),
        1,
        "the example plan's billing rule changed: update billing_example()"
    );
    plan.replace(
        from,
        "intents = [\"billing\", \"invoice\"]\n[rules.action]\nqueue = \"general\"\n",
    )
}

#[tokio::test]
async fn readme_console_blocks_match_real_runs() {
    let billing = repo().join("examples/billing.toml");
    if blessing() {
        std::fs::write(&billing, billing_example()).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&billing).unwrap(),
        billing_example(),
        "examples/billing.toml is not the example plan with billing sent to general \
         (regenerate: {BLESS_ENV}=1 cargo test --test api readme)"
    );

    let readme_path = repo().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let blocks = console_blocks(&readme);
    assert!(blocks.len() >= 3, "the README shows a session");
    let mut lines: Vec<String> = readme.lines().map(String::from).collect();
    let mut mismatches = Vec::new();
    // Replaced from the last block up, so earlier line ranges stay valid.
    let mut rewrites = Vec::new();
    for block in &blocks {
        let actual = run_block(block).await;
        for (documented, real) in block.steps.iter().zip(&actual) {
            if mask(&documented.output) != mask(&real.output) {
                mismatches.push(format!(
                    "$ {}\n--- README\n{}--- real run\n{}",
                    documented.command, documented.output, real.output
                ));
            }
        }
        rewrites.push((block.body.clone(), render(&actual)));
    }
    if blessing() {
        for (range, text) in rewrites.into_iter().rev() {
            lines.splice(range, text.lines().map(String::from));
        }
        let mut text = lines.join("\n");
        text.push('\n');
        let tmp = readme_path.with_extension("md.bless");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &readme_path).unwrap();
        return;
    }
    assert!(
        mismatches.is_empty(),
        "README examples differ from a real run (ULIDs, times and hashes masked); if the \
         new output is right, regenerate them with {BLESS_ENV}=1 cargo test --test api \
         readme\n\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn masking_hides_ids_times_and_hashes_only() {
    let line = "2    2026-11-25 09:05:00  anonymous  plan v2  cli-01M88Z6ZZWW2CEGAN7M9JMWVQ7  \
                185482a48819 at 2026-11-25T15:00:00Z, version 2";
    assert_eq!(
        mask(line),
        "2    <TIME>  anonymous  plan v2  cli-<ULID>  <HASH> at <TIME>, version 2"
    );
    let block = ["$ holdless a \\", "    --b", "one", "", "$ holdless c", ""];
    let steps = parse_steps(&block);
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].command, "holdless a \\\n    --b");
    assert_eq!(steps[0].output, "one\n");
    assert_eq!(
        render(&steps),
        "$ holdless a \\\n    --b\none\n\n$ holdless c\n"
    );
}

/// Every RPC of every holdless service in the protos, as (service, method).
fn proto_methods() -> BTreeSet<(String, String)> {
    let set = prost_types::FileDescriptorSet::decode(holdless::api::FILE_DESCRIPTOR_SET)
        .expect("descriptor set decodes");
    let mut out = BTreeSet::new();
    for file in set.file {
        if file.package() != "holdless.v1" {
            continue;
        }
        for service in file.service {
            for method in &service.method {
                out.insert((service.name().to_owned(), method.name().to_owned()));
            }
        }
    }
    out
}

/// The README's "gRPC API" table lists every RPC in the protos, once, with the roles
/// the auth table gives it.
#[test]
fn readme_api_section_lists_every_rpc_with_its_roles() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## gRPC API\n")
        .nth(1)
        .expect("a `## gRPC API` section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut listed = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let unquote = |s: &str| s.trim_matches('`').to_owned();
        let (service, method) = (unquote(cells[1]), unquote(cells[2]));
        let path = format!("/holdless.v1.{service}/{method}");
        let roles = holdless::auth::table::roles_for(&path)
            .unwrap_or_else(|| panic!("{path} is in the README but not in the auth table"));
        let documented: Vec<&str> = cells[3].split(',').map(str::trim).collect();
        let expected: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        assert_eq!(documented, expected, "roles of {path}");
        assert!(
            listed.insert((service, method)),
            "{path} is listed twice in the README"
        );
    }
    let protos = proto_methods();
    let missing: Vec<_> = protos.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&protos).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README gRPC API table: missing {missing:?}, not in the protos {extra:?}"
    );
}
