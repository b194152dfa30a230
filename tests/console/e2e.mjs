// Browser end to end of the holdless web console, run by tests/console/e2e.sh against
// a real `holdless serve`. Debian's chromium is driven by playwright-core; the calls,
// the callback and the second plan version are seeded over gRPC (grpc-js) and the CLI.
//
// Steps: sign in; the wallboard shows a queue tile; a call routed over gRPC changes the
// tile's waiting count within 1 s with no reload; the staffing heatmap has cells for
// the seeded calls; a callback cancelled from the page is CANCELLED over gRPC; the plan
// diff shows the changed line; a customer token is refused (403). A screenshot of each
// page goes to $SHOTS. Prints `console_e2e: N passed, M failed`.
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { chromium } from "playwright-core";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const CONSOLE = env("CONSOLE_URL");
const GRPC = env("GRPC_ADDR");
const SUPERVISOR = env("SUPERVISOR_TOKEN");
const CUSTOMER = env("CUSTOMER_TOKEN");
const TELEPHONY = env("TELEPHONY_TOKEN");
const SHOTS = env("SHOTS");
const REPO = env("REPO");
const BIN = env("HOLDLESS_BIN");
const PLAN2 = env("PLAN2");
const CHANGED_LINE = env("CHANGED_LINE");
mkdirSync(SHOTS, { recursive: true });

const def = protoLoader.loadSync(
  ["holdless/v1/routing.proto", "holdless/v1/callback.proto"],
  { includeDirs: [path.join(REPO, "proto")], keepCase: true, longs: String, enums: String, defaults: true },
);
const pb = grpc.loadPackageDefinition(def).holdless.v1;
const routing = new pb.RoutingService(GRPC, grpc.credentials.createInsecure());
const callbacks = new pb.CallbackService(GRPC, grpc.credentials.createInsecure());
const auth = (token) => {
  const m = new grpc.Metadata();
  m.add("authorization", `Bearer ${token}`);
  return m;
};
const rpc = (client, method, req, token = SUPERVISOR) =>
  new Promise((resolve, reject) =>
    client[method](req, auth(token), { deadline: Date.now() + 5000 }, (err, res) => (err ? reject(err) : resolve(res))),
  );

let passed = 0;
let failed = 0;
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}
function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

let callNo = 0;
const route = (caller = "+12125550100") =>
  rpc(routing, "RouteCall", { call_id: `e2e-call-${++callNo}-${Date.now()}`, caller_number: caller }, TELEPHONY);

// Seed: calls for the heatmap and the wallboard, and a callback to cancel. The heatmap
// counts a call once it has left the line (answered, abandoned or transferred away, as
// GetKpiReport counts offered calls), so one more caller hangs up; the others wait.
for (let i = 0; i < 3; i++) await route();
const gone = `e2e-gone-${Date.now()}`;
await rpc(routing, "RouteCall", { call_id: gone, caller_number: "+12125550101" }, TELEPHONY);
await rpc(routing, "ReportCallEvent", { call_id: gone, type: "CALL_EVENT_TYPE_ABANDONED" }, TELEPHONY);
const requested = await rpc(callbacks, "RequestCallback", {
  queue_id: "general",
  phone_number: "+13125550142",
  notes: "console e2e",
});
const callbackId = requested.callback.callback_id;
// A second plan version, for the diff.
execFileSync(BIN, ["plan", "apply", PLAN2, "--comment", "console e2e change", "--server", `http://${GRPC}`], {
  env: { ...process.env, HOLDLESS_TOKEN: SUPERVISOR },
  stdio: ["ignore", "ignore", "inherit"],
});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
// Screenshots are for people reading the run, not assertions: headless chromium sometimes
// refuses a capture while a page is still committing a navigation, so wait for the page to
// settle, try a few times, and only report a capture that never worked.
async function shot(page, name) {
  let last;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await page.waitForLoadState("load");
      await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: false });
      return;
    } catch (e) {
      last = e;
      await page.waitForTimeout(300);
    }
  }
  console.log(`     screenshot ${name} not taken: ${String(last && last.message).split("\n")[0]}`);
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  if (process.env.E2E_DEBUG) {
    page.on("console", (m) => console.log(`     console: ${m.text()}`));
    page.on("pageerror", (e) => console.log(`     page error: ${e}`));
    page.on("response", (r) => r.status() >= 400 && console.log(`     ${r.status()} ${r.url()}`));
    page.on("requestfinished", (r) => r.url().includes("events") && console.log(`     done ${r.url()}`));
    page.on("request", (r) => r.url().includes("events") && console.log(`     request ${r.url()}`));
  }

  await step("sign in as a supervisor", async () => {
    await page.goto(`${CONSOLE}/wallboard`);
    check(page.url().endsWith("/signin"), `not sent to sign-in: ${page.url()}`);
    await shot(page, "signin");
    await page.fill("#token", SUPERVISOR);
    await Promise.all([page.waitForURL("**/wallboard"), page.click("button[type=submit]")]);
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === "holdless_session");
    check(session && session.httpOnly && session.sameSite === "Strict", `cookie: ${JSON.stringify(session)}`);
  });

  const waiting = page.locator('[data-queue="general"] [data-field="waiting"]');
  await step("the wallboard shows a queue tile", async () => {
    await waiting.waitFor();
    const name = await page.locator('[data-queue="general"] h2').textContent();
    check(name && name.length > 0, "tile without a name");
    check(Number(await waiting.textContent()) >= 3, `waiting ${await waiting.textContent()}`);
  });

  await step("a call routed over gRPC shows on the tile within 1 s, no reload", async () => {
    // The page's event stream is open once the status says live.
    await page.waitForFunction(() => document.getElementById("live-status")?.textContent === "live");
    const marker = await page.evaluate(() => (window.__e2eMarker = Math.random()));
    if (process.env.E2E_DEBUG) {
      console.log(`     htmx: ${await page.evaluate(() => typeof window.htmx + " " + Object.keys(window.htmx?.config || {}).length)}`);
      await page.evaluate(() => {
        for (const ev of ["htmx:sseMessage", "htmx:sseBeforeMessage", "htmx:sseOpen", "htmx:sseError", "htmx:swapError", "htmx:targetError"]) {
          document.body.addEventListener(ev, (e) => console.log(ev, e.detail && e.detail.type));
        }
      });
    }
    const before = Number(await waiting.textContent());
    const t0 = Date.now();
    await route();
    await page.waitForFunction(
      ([sel, want]) => Number(document.querySelector(sel)?.textContent) === want,
      ['[data-queue="general"] [data-field="waiting"]', before + 1],
      { timeout: 1000 },
    );
    const took = Date.now() - t0;
    check((await page.evaluate(() => window.__e2eMarker)) === marker, "the page was reloaded");
    console.log(`     tile updated ${took} ms after RouteCall returned`);
    await shot(page, "wallboard");
    await page.goto(`${CONSOLE}/wallboard?wall=1`);
    await waiting.waitFor();
    await shot(page, "wallboard-wall");
  });

  await step("the staffing heatmap has cells for the seeded calls", async () => {
    await page.goto(`${CONSOLE}/staffing?queue=general`);
    const cells = page.locator("td.heat-cell");
    await cells.first().waitFor({ timeout: 5000 });
    const withCalls = await page.$$eval("td.heat-cell", (tds) =>
      tds.filter((td) => Number(td.getAttribute("data-calls")) > 0).length,
    );
    await shot(page, "staffing");
    check((await cells.count()) === 7 * 24, `heatmap cells: ${await cells.count()}`);
    check(withCalls >= 1, "no heatmap cell counts the seeded calls");
  });

  await step("KPIs page renders", async () => {
    const res = await page.goto(`${CONSOLE}/kpis`);
    check(res.status() === 200, `status ${res.status()}`);
    await shot(page, "kpis");
  });

  await step("a callback cancelled from the page is CANCELLED over gRPC", async () => {
    await page.goto(`${CONSOLE}/callbacks?state=pending`);
    await shot(page, "callbacks");
    await Promise.all([page.waitForURL(`**/callbacks/${callbackId}`), page.click(`a[href="/callbacks/${callbackId}"]`)]);
    await page.fill('input[name="reason"]', "customer asked by email");
    await Promise.all([page.waitForURL(`**/callbacks/${callbackId}`), page.click("#cancel")]);
    const state = await page.locator("#cb-state").textContent();
    check(state === "cancelled", `page says ${state}`);
    await shot(page, "callback-detail");
    const got = await rpc(callbacks, "GetCallback", { callback_id: callbackId });
    check(got.callback.state === "CALLBACK_STATE_CANCELLED", `gRPC says ${got.callback.state}`);
  });

  await step("the plan diff shows the changed line", async () => {
    await page.goto(`${CONSOLE}/plan`);
    await page.selectOption('select[name="from"]', "1");
    await page.selectOption('select[name="to"]', "2");
    await Promise.all([page.waitForURL("**/plan/diff?**"), page.click("form.filters button[type=submit]")]);
    const added = await page.locator("pre.diff .add").allTextContents();
    check(added.some((l) => l.includes(CHANGED_LINE)), `added lines: ${JSON.stringify(added)}`);
    await shot(page, "plan-diff");
    await page.goto(`${CONSOLE}/plan`);
    await shot(page, "plan");
  });

  await step("a customer token is refused with 403", async () => {
    const other = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const p = await other.newPage();
    await p.goto(`${CONSOLE}/signin`);
    await p.fill("#token", CUSTOMER);
    const [res] = await Promise.all([
      p.waitForResponse((r) => r.url().endsWith("/signin") && r.request().method() === "POST"),
      p.click("button[type=submit]"),
    ]);
    check(res.status() === 403, `sign-in status ${res.status()}`);
    await shot(p, "refused");
    const wall = await p.goto(`${CONSOLE}/wallboard`);
    check(wall.url().endsWith("/signin"), `customer reached ${wall.url()}`);
    check((await other.cookies()).every((c) => c.name !== "holdless_session"), "customer got a session");
    await other.close();
  });
} finally {
  await browser.close();
  routing.close();
  callbacks.close();
}
console.log(`console_e2e: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
