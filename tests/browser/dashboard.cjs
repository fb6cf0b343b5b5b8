// The dashboard in a real browser: Debian's Chromium driven by playwright-core.
// Called by tests/it/browser.rs with the server's URL, tokens and what the pages must show;
// prints one JSON line of findings and exits 0, or prints the failure and exits 1.
//   SPACEPULSE_URL, SPACEPULSE_OFFICIAL_TOKEN, SPACEPULSE_OPERATOR_TOKEN,
//   SPACEPULSE_ADVERTISER_TOKEN, SPACEPULSE_ADVERTISER, SPACEPULSE_ANALYST_TOKEN,
//   SPACEPULSE_CAMPAIGN, SPACEPULSE_ACCOUNT, SPACEPULSE_MILESTONES (JSON {"+1 s": users, ...}),
//   SPACEPULSE_SCREENSHOTS (a directory), SPACEPULSE_NODE_MODULES, SPACEPULSE_CHROMIUM
"use strict";
const path = require("path");
const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (tests/it/browser.rs sets it)`);
  return v;
};
const { chromium } = require(path.join(env("SPACEPULSE_NODE_MODULES"), "playwright-core"));

const url = env("SPACEPULSE_URL");
const shots = env("SPACEPULSE_SCREENSHOTS");
const num = (s) => Number(String(s).replace(/[^0-9.-]/g, ""));

async function login(browser, token, viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  await page.goto(url + "/");
  await page.waitForURL(/\/login$/);
  await page.fill("#token", token);
  await Promise.all([page.waitForNavigation(), page.click("#login")]);
  // The session is in an HttpOnly cookie: scripts on the page cannot read it; it holds a
  // session's secret, not the token.
  const visible = await page.evaluate(() => document.cookie);
  if (visible.includes("spacepulse_session")) throw new Error("the login cookie is readable by scripts");
  const cookies = await context.cookies();
  const c = cookies.find((x) => x.name === "spacepulse_session");
  if (!c || !c.httpOnly || c.sameSite !== "Strict") throw new Error("login cookie: " + JSON.stringify(c));
  if (!c.value.startsWith("sps_") || c.value.includes(token)) throw new Error("the cookie holds the token");
  if (cookies.some((x) => x.name === "spacepulse_token")) throw new Error("a token cookie is set");
  return { context, page };
}

(async () => {
  const browser = await chromium.launch({
    executablePath: env("SPACEPULSE_CHROMIUM"),
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const found = {};
  try {
    // An official account: its home page, then the launch campaign.
    const campaign = env("SPACEPULSE_CAMPAIGN");
    const { context, page } = await login(browser, env("SPACEPULSE_OFFICIAL_TOKEN"), { width: 1200, height: 900 });
    await page.waitForURL(new RegExp("/accounts/" + env("SPACEPULSE_ACCOUNT") + "$"));
    await page.click(`#campaigns a[href="/campaigns/${campaign}"]`);
    await page.waitForSelector("#milestones");
    found.milestones = await page.$$eval('#milestones td[data-col="users"]', (tds) => tds.map((t) => t.textContent));
    found.milestone_names = await page.$$eval('#milestones td[data-col="after"]', (tds) => tds.map((t) => t.textContent));
    found.funnel_steps = await page.$$eval('#funnel td[data-col="step_type"]', (tds) => tds.map((t) => t.textContent));
    found.launch_chart_lines = await page.locator('#launch-chart svg polyline[stroke="#2563EB"]').count();
    const want = JSON.parse(env("SPACEPULSE_MILESTONES"));
    const shown = Object.fromEntries(found.milestone_names.map((n, i) => [n, Number(found.milestones[i])]));
    for (const [name, users] of Object.entries(want)) {
      if (shown[name] !== users) {
        throw new Error(`milestone ${name}: the page shows ${shown[name]}, the generator's manifest ${users} (page: ${JSON.stringify(shown)})`);
      }
    }
    if (found.launch_chart_lines < 1) throw new Error("no launch curve in the chart");
    await page.screenshot({ path: path.join(shots, "launch.png"), fullPage: true });
    // The same page on a phone.
    await page.setViewportSize({ width: 390, height: 844 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    found.phone_overflow_px = overflow;
    if (overflow > 0) throw new Error(`the page is ${overflow}px wider than a phone`);
    await page.screenshot({ path: path.join(shots, "launch-phone.png"), fullPage: true });
    // The range presets: the funnel of the last 7 days' users, and the campaign's exact reach.
    await page.setViewportSize({ width: 1200, height: 900 });
    await Promise.all([page.waitForNavigation(), page.click('.range a[href$="range=7d"]')]);
    found.funnel_of = await page.textContent("#funnel-of");
    if (!/fell from \d{4}-\d\d-\d\d to \d{4}-\d\d-\d\d/.test(found.funnel_of)) {
      throw new Error("the 7-day preset shows no range funnel: " + found.funnel_of);
    }
    found.range_reach = num(await page.textContent('#campaign-reach [data-total="reach"]'));
    found.range_first_step = num(await page.textContent('#funnel td[data-col="users"]'));
    if (!(found.range_reach > 0 && found.range_first_step > 0 && found.range_first_step <= found.range_reach)) {
      throw new Error(`7 days: reach ${found.range_reach}, first step ${found.range_first_step}`);
    }

    // A share link to the campaign behind a password, opened by someone without a login.
    await page.setViewportSize({ width: 1200, height: 900 });
    await page.goto(url + "/shares");
    await page.selectOption('#new-share select[name="what"]', "campaign:" + campaign);
    await page.fill('#new-share input[name="password"]', "board meeting 2015");
    await Promise.all([page.waitForNavigation(), page.click("#create-share")]);
    const link = await page.getAttribute("#new-link", "href");
    if (!/^\/s\/spl_[0-9a-f]{64}$/.test(link)) throw new Error("share link: " + link);
    await context.close();
    const visitor = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    const v = await visitor.newPage();
    await v.goto(url + link);
    await v.fill('input[name="password"]', "not it");
    await Promise.all([v.waitForNavigation(), v.click("button")]);
    if (!(await v.textContent("main")).includes("Wrong password")) throw new Error("a wrong password opened the link");
    await v.fill('input[name="password"]', "board meeting 2015");
    await Promise.all([v.waitForNavigation(), v.click("button")]);
    await v.waitForSelector("#milestones");
    found.shared_milestones = await v.$$eval('#milestones td[data-col="users"]', (tds) => tds.map((t) => t.textContent));
    if (JSON.stringify(found.shared_milestones) !== JSON.stringify(found.milestones)) {
      throw new Error("the shared page's milestones differ from the owner's");
    }
    if (await v.locator("nav").count() > 0) throw new Error("a shared page shows navigation");
    await v.screenshot({ path: path.join(shots, "shared.png"), fullPage: true });
    await visitor.close();

    // An advertiser: its home page, money in its currency, rates as percentages, exact reach
    // with the HLL++ figure beside it; and nothing of another tenant's.
    const advertiser = env("SPACEPULSE_ADVERTISER");
    const adv = await login(browser, env("SPACEPULSE_ADVERTISER_TOKEN"), { width: 1200, height: 900 });
    await adv.page.waitForURL(new RegExp("/advertisers/" + advertiser + "$"));
    found.adv_spend = await adv.page.textContent('#totals [data-total="spend"]');
    found.adv_ctr = await adv.page.textContent('#totals [data-total="ctr"]');
    found.adv_reach = num(await adv.page.textContent('#totals [data-total="unique_reach"]'));
    found.adv_reach_hll = num(await adv.page.textContent('#totals [data-total="unique_reach_approx"]'));
    if (!/^[A-Z]{3} [0-9,]+\.[0-9]{2}$/.test(found.adv_spend)) throw new Error("spend: " + found.adv_spend);
    if (!/ %$/.test(found.adv_ctr)) throw new Error("CTR: " + found.adv_ctr);
    if (!(found.adv_reach > 0 && Math.abs(found.adv_reach_hll - found.adv_reach) <= 0.03 * found.adv_reach)) {
      throw new Error(`reach ${found.adv_reach}, HLL++ ${found.adv_reach_hll}`);
    }
    const other = await adv.page.goto(url + "/accounts/" + env("SPACEPULSE_ACCOUNT"));
    found.adv_other_status = other.status();
    if (found.adv_other_status !== 404) throw new Error("an advertiser opened a brand's page: " + found.adv_other_status);
    await adv.context.close();

    // An analyst: the platform page, its figures and what each counts.
    const an = await login(browser, env("SPACEPULSE_ANALYST_TOKEN"), { width: 1200, height: 900 });
    await an.page.waitForURL(/\/platform$/);
    const dau = await an.page.$$eval('#activity td[data-col="dau"]', (tds) => tds.map((t) => Number(t.textContent)));
    found.analyst_days = dau.length;
    if (!(dau.length > 0 && dau.every((d) => d > 0))) throw new Error("DAU: " + JSON.stringify(dau));
    if (await an.page.locator("#activity-counts dt").count() < 5) throw new Error("the platform page does not say what DAU, WAU, MAU count");
    await an.context.close();

    // An operator: the live page's counter rises while events are produced.
    const op = await login(browser, env("SPACEPULSE_OPERATOR_TOKEN"), { width: 1200, height: 900 });
    await op.page.goto(url + "/live");
    await op.page.waitForFunction(() => document.getElementById("status").textContent === "live");
    await op.page.waitForFunction(() => /[0-9]/.test(document.getElementById("events-total").textContent));
    const first = num(await op.page.textContent("#events-total"));
    await op.page.waitForFunction(
      (n) => Number(document.getElementById("events-total").textContent.replace(/[^0-9]/g, "")) > n + 100,
      first, { timeout: 60000 });
    found.live_first = first;
    found.live_then = num(await op.page.textContent("#events-total"));
    found.live_clock = await op.page.textContent("#clock");
    await op.page.screenshot({ path: path.join(shots, "live.png"), fullPage: true });
    await op.context.close();
    console.log(JSON.stringify(found));
  } catch (e) {
    console.error("browser test failed:", e && e.stack ? e.stack : e, JSON.stringify(found));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
})();
