// The status page as one self-contained HTML page (/status): inline CSS, no script, reloaded every
// REFRESH_SEC; everything written into it is escaped. Its data is the StatusBoard's (status.ts).
import type { StatusData, CredentialStatus, TrafficSummary, KeyTraffic, GatewayTotals } from './status.js';

/** Seconds between the page's own reloads. */
export const REFRESH_SEC = 10;

/** Markup already escaped: the only thing html`` inserts as is. */
class Html {
  constructor(readonly text: string) {}
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

function part(value: unknown): string {
  if (value instanceof Html) return value.text;
  if (Array.isArray(value)) return value.map(part).join('');
  if (value === null || value === undefined || value === false) return '';
  return escapeHtml(String(value));
}

/** A template whose every interpolation is escaped, unless it is itself html``. */
function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  return new Html(strings.reduce((out, s, i) => out + part(values[i - 1]) + s));
}

const num = (n: number) => n.toLocaleString('en-US');

export function formatDuration(sec: number): string {
  const s = Math.max(0, Math.floor(sec));
  if (s < 60) return `${s} s`;
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d} d ${h} h`;
  return h > 0 ? `${h} h ${m} min` : `${m} min`;
}

/** 2026-07-23T23:59:59.000Z → 2026-07-23 23:59 UTC */
const when = (isoTime: string) => `${isoTime.slice(0, 16).replace('T', ' ')} UTC`;

function since(isoTime: string, now: number): string {
  const sec = (now - Date.parse(isoTime)) / 1000;
  return sec >= 0 ? `${formatDuration(sec)} ago` : `in ${formatDuration(-sec)}`;
}

const MODES: Record<string, string> = { client_credentials: 'client credentials', static: 'static token' };
const STATUS_TONE: Record<string, string> = { active: 'ok', grace: 'warn', blocked: 'bad', expired: 'bad' };

/** An error that a later renewal has fixed is history, not an alarm. */
const errorTone = (errorAt: string, renewalAt: string | null) => (renewalAt !== null && Date.parse(renewalAt) >= Date.parse(errorAt) ? 'muted' : 'bad');

function tokenPart(c: CredentialStatus, now: number): Html {
  const t = c.token;
  const state = t.valid
    ? html`<span class="ok">valid</span>${t.expiresInSec === null ? ', no known expiry' : `, expires in ${formatDuration(t.expiresInSec)}`}`
    : html`<span class="bad">not valid</span>: ${t.reason}`;
  return html`<dl>
      <dt>Token</dt><dd>${state}</dd>
      <dt>Last renewal</dt><dd>${t.lastRenewalAt ? `${when(t.lastRenewalAt)} (${since(t.lastRenewalAt, now)})` : '–'}</dd>
      <dt>Last error</dt><dd>${t.lastError && t.lastErrorAt ? html`<span class="${errorTone(t.lastErrorAt, t.lastRenewalAt)}">${t.lastError}</span> (${since(t.lastErrorAt, now)})` : '–'}</dd>
    </dl>`;
}

function accountPart(c: CredentialStatus, warnPercent: number, now: number): Html {
  const a = c.account;
  if (!a) {
    const why = !c.usagePolled ? 'points usage is not polled (USAGE_POLL_MS=0)' : c.usageError ? `points usage unknown: ${c.usageError}` : 'points usage: first poll under way';
    return html`<p class="muted account-none">${why}</p>`;
  }
  const tone = a.percentUsed === null ? 'ok' : a.percentUsed >= 95 ? 'bad' : a.percentUsed >= warnPercent ? 'warn' : 'ok';
  const points =
    a.percentUsed === null
      ? html`<p class="points"><strong>${num(a.pointsUsed)}</strong> points used (no limit)</p>`
      : html`<p class="points"><strong>${num(a.pointsUsed)}</strong> of ${num(a.pointsLimit)} points used (${a.percentUsed.toFixed(1)}%), ${num(a.pointsLeft ?? 0)} left</p>
      <div class="bar" role="progressbar" aria-label="points used" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${Math.min(100, a.percentUsed)}"><span class="${tone}-bg" style="width:${Math.min(100, a.percentUsed)}%"></span></div>`;
  return html`<h3>Bitquery account <span class="tag ${STATUS_TONE[a.status] ?? 'warn'}">${a.status}</span> <span class="muted">${a.plan}</span></h3>
    ${points}
    <p class="muted">period ${when(a.periodStart)} – ${when(a.periodEnd)} (${Date.parse(a.periodEnd) > now ? 'ends' : 'ended'} ${since(a.periodEnd, now)}) · ${num(a.requestsUsed)} requests · streams allowed: ${a.subscriptionLimit > 0 ? num(a.subscriptionLimit) : 'no limit'}${c.usageError ? html` · <span class="bad">last poll failed: ${c.usageError}</span>` : ''}</p>`;
}

function tile(label: string, value: string | number, tone = ''): Html {
  return html`<div class="tile"><div class="${tone ? `value ${tone}` : 'value'}">${typeof value === 'number' ? num(value) : value}</div><div class="label">${label}</div></div>`;
}

function trafficPart(t: TrafficSummary): Html {
  const statuses = Object.keys(t.byStatus).sort();
  return html`<div class="tiles">
      ${tile('requests', t.requests)}
      ${tile('retries after a 401', t.retries)}
      ${tile('Bitquery 402 (points)', t.upstream402, t.upstream402 ? 'bad' : '')}
      ${tile('Bitquery 429 (rate)', t.upstream429, t.upstream429 ? 'warn' : '')}
      ${tile('proxy 429 (local limits)', t.rateLimited, t.rateLimited ? 'warn' : '')}
      ${tile('open streams', t.openStreams)}
      ${t.requestsSaved !== undefined && tile('requests saved', t.requestsSaved, 'ok')}
      ${t.subscriptions !== undefined && tile('subscriptions on upstream streams', `${num(t.subscriptions)} on ${num(t.upstreamStreams ?? 0)}`)}
    </div>
    <h3>Requests by status</h3>
    ${
      statuses.length
        ? html`<table class="by-status"><tr><th>status</th><th>requests</th></tr>${statuses.map(
            (s) => html`<tr><td class="${Number(s) >= 500 ? 'bad' : Number(s) >= 400 ? 'warn' : 'ok'}">${s}</td><td>${num(t.byStatus[s]!)}</td></tr>`,
          )}</table>`
        : html`<p class="muted">no requests yet</p>`
    }`;
}

function keysPart(keys: KeyTraffic[]): Html {
  if (!keys.length) return html`<p class="muted">no traffic yet</p>`;
  return html`<table class="keys"><tr><th>key</th><th>requests</th><th>Bitquery 402/429</th><th>proxy 429</th><th>open streams</th></tr>${keys.map(
    (k) => html`<tr><td>${k.name === 'none' ? '(no key)' : k.name}</td><td>${num(k.requests)}</td><td class="${k.upstreamLimited ? 'warn' : ''}">${num(k.upstreamLimited)}</td><td class="${k.rateLimited ? 'warn' : ''}">${num(k.rateLimited)}</td><td>${num(k.openStreams)}</td></tr>`,
  )}</table>`;
}

function gatewayPart(g: GatewayTotals): Html {
  if (!g.available) return html`<p class="bad">unknown: Redis is unavailable (limits count in each replica meanwhile)</p>`;
  return html`<div class="tiles">
      ${tile('requests', g.requests)}
      ${tile('Bitquery 402 (points)', g.status402, g.status402 ? 'bad' : '')}
      ${tile('429 (Bitquery and proxy)', g.status429, g.status429 ? 'warn' : '')}
      ${tile('requests saved', g.saved, 'ok')}
    </div>
    ${g.keys.length ? html`<table class="gateway-keys"><tr><th>key</th><th>requests</th><th>402</th><th>429</th><th>saved</th></tr>${g.keys.map(
      (k) => html`<tr><td>${k.name === 'none' ? '(no key)' : k.name}</td><td>${num(k.requests)}</td><td>${num(k.status402)}</td><td>${num(k.status429)}</td><td>${num(k.saved)}</td></tr>`,
    )}</table>` : ''}`;
}

const CSS = `
:root{color-scheme:light;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--muted:#57606a;--line:#d0d7de}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#f6f8fa}
header,main,footer{max-width:1040px;margin:0 auto;padding:0 20px}
header{padding-top:18px}
h1{font-size:22px;margin:0}
h2{font-size:17px;margin:22px 0 10px}
h3{font-size:15px;margin:14px 0 6px}
.muted{color:var(--muted);font-weight:normal}
.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad)}
.ok-bg{background:var(--ok)}.warn-bg{background:#d4a72c}.bad-bg{background:var(--bad)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:14px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px 16px}
.card h2{margin:0 0 8px}
.tag{display:inline-block;font-size:12px;font-weight:600;padding:1px 8px;border-radius:10px;border:1px solid currentColor;vertical-align:middle}
.tag.mode{color:var(--muted)}
dl{display:grid;grid-template-columns:110px 1fr;gap:3px 10px;margin:0}
dt{color:var(--muted)}dd{margin:0}
.points{margin:4px 0 6px;font-size:16px}
.bar{height:14px;background:#eaeef2;border-radius:7px;overflow:hidden}
.bar span{display:block;height:100%;min-width:2px}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px}
.tile{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.tile .value{font-size:24px;font-weight:600}
.tile .label{color:var(--muted);font-size:13px}
table{border-collapse:collapse;background:#fff;border:1px solid var(--line);border-radius:8px;min-width:320px}
th,td{padding:5px 14px;border-bottom:1px solid var(--line);text-align:right}
th:first-child,td:first-child{text-align:left}
th{font-size:13px;color:var(--muted);font-weight:600}
tr:last-child td{border-bottom:0}
footer{padding:22px 20px 30px;color:var(--muted);font-size:13px}
a{color:#0969da}
`;

/** The whole page: inline CSS, no script, no external asset; reloads itself every REFRESH_SEC. */
export function renderStatusPage(data: StatusData): string {
  const now = Date.parse(data.generatedAt);
  const cards = data.credentials.map(
    (c) => html`<article class="card">
    <h2>${c.name} <span class="tag mode">${MODES[c.mode] ?? c.mode}</span></h2>
    ${tokenPart(c, now)}
    ${accountPart(c, data.budgetWarnPercent, now)}
  </article>`,
  );
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="${REFRESH_SEC}">
<title>bitquery-proxy status</title>
<style>${new Html(CSS)}</style>
</head>
<body>
<header>
  <h1>bitquery-proxy <span class="muted">${data.version}</span></h1>
  <p class="muted">up ${formatDuration(data.uptimeSec)} · as of ${when(data.generatedAt)} · refreshes every ${REFRESH_SEC} s</p>
</header>
<main>
  <h2>Credential sets</h2>
  <div class="cards">${cards}</div>
  <h2>Traffic since start</h2>
  ${trafficPart(data.traffic)}
  <h2>Per key</h2>
  ${keysPart(data.traffic.keys)}
  ${data.gateway && html`<h2>Gateway totals (all replicas, through Redis)</h2>${gatewayPart(data.gateway)}`}
</main>
<footer>The same data as JSON: <a href="status.json">status.json</a> · Prometheus: <a href="metrics">metrics</a></footer>
</body>
</html>
`.text;
}
