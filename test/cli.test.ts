// The command line: --help, --version, flags and their precedence, `token` and `check`.
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SETTINGS } from '../src/config/index.js';
import { fakeEnv, SECRET, startFake } from './helpers/pair.js';
import { closedPort } from './helpers/ports.js';
import { baseEnv, CLI, spawnProxy } from './helpers/proxy-process.js';

/** Runs the binary to completion in `cwd` (a fresh folder by default); output split by stream. */
async function run(args: string[], env: Record<string, string>, cwd = mkdtempSync(join(tmpdir(), 'bqp-cli-'))) {
  const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...baseEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr, output: stdout + stderr };
}

t.test('--help lists every setting with its variable, flag and default; --version', async (t) => {
  const help = await run(['--help'], {});
  t.equal(help.code, 0);
  for (const s of SETTINGS) {
    t.match(help.stdout, s.name);
    if (!s.secret) t.match(help.stdout, `--${s.name.toLowerCase().replace(/_/g, '-')}`);
    if (s.default !== undefined) t.match(help.stdout, `[default: ${s.default}]`);
  }
  t.match(help.stdout, /flags, then the environment, then the env file/);
  const version = await run(['--version'], {});
  t.equal(version.code, 0);
  t.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
});

t.test('bad arguments exit 2 with one line', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--frobnicate'], /Unknown option '--frobnicate'.*see --help/],
    [['frob'], /unknown command "frob": use start, token or check/],
    [['--port'], /argument missing/],
    [['--bitquery-client-secret', 'shh-flag-secret'], /BITQUERY_CLIENT_SECRET cannot be a flag/],
    [['--bitquery-token=shh-flag-secret'], /BITQUERY_TOKEN cannot be a flag/],
  ];
  for (const [args, message] of cases) {
    const r = await run(args, { BITQUERY_TOKEN: 't' });
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, message);
    t.equal(r.output.trim().split('\n').length, 1);
    t.notMatch(r.output, 'shh-flag-secret');
  }
});

t.test('precedence: flags > environment > env file > defaults', async (t) => {
  const [a, b, c] = [await closedPort(), await closedPort(), await closedPort()];
  const cwd = mkdtempSync(join(tmpdir(), 'bqp-cli-'));
  writeFileSync(join(cwd, '.env'), `BITQUERY_TOKEN=from-env-file\nBITQUERY_UPSTREAM=http://127.0.0.1:${a}\n`);
  const upstreamOf = async (args: string[], env: Record<string, string>) => /upstream (\S+)/.exec((await run(['check', ...args], env, cwd)).stdout)?.[1];
  t.equal(await upstreamOf([], {}), `http://127.0.0.1:${a}`, 'env file over default');
  t.equal(await upstreamOf([], { BITQUERY_UPSTREAM: `http://127.0.0.1:${b}` }), `http://127.0.0.1:${b}`, 'environment over env file');
  t.equal(await upstreamOf(['--bitquery-upstream', `http://127.0.0.1:${c}`], { BITQUERY_UPSTREAM: `http://127.0.0.1:${b}` }), `http://127.0.0.1:${c}`, 'flag over environment');
  const other = join(cwd, 'other.env');
  writeFileSync(other, `BITQUERY_TOKEN=x\nBITQUERY_UPSTREAM=http://127.0.0.1:${c}\n`);
  t.equal(await upstreamOf(['--dotenv', other], {}), `http://127.0.0.1:${c}`, '--dotenv picks the file');
});

t.test('--env-file is refused with what to use instead; a --dotenv file that is missing exits 2', async (t) => {
  const cwd = mkdtempSync(join(tmpdir(), 'bqp-cli-'));
  const file = join(cwd, 'settings.env');
  writeFileSync(file, 'BITQUERY_TOKEN=x\n');
  // Node itself reads --env-file, even after the script's name; with a file that exists it runs the CLI.
  for (const args of [['--env-file', file], [`--env-file=${file}`]]) {
    const r = await run(args, {}, cwd);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, /^bitquery-proxy: --env-file is an option of Node\.js.*--dotenv <path>\n$/);
  }
  const missing = await run(['--dotenv', join(cwd, 'missing.env')], { BITQUERY_TOKEN: 'x' }, cwd);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /^bitquery-proxy: --dotenv .*missing\.env: no such file\n$/);
  const help = await run(['--help'], {});
  t.match(help.stdout, /--dotenv <path> .*not --env-file/);
});

t.test('names that look like settings but are none get one warning each, naming the closest setting', async (t) => {
  const cwd = mkdtempSync(join(tmpdir(), 'bqp-cli-'));
  writeFileSync(join(cwd, '.env'), 'WS_MAX_STREAM=5\nUNRELATED_NAME=1\n');
  const proxy = await spawnProxy({ BITQUERY_TOKEN: 't', BITQUERY_UPSTREAM: 'http://127.0.0.1:9', BITQUERY_UPSTREM: 'https://x.example', LOG_LEVL: 'debug' }, { cwd });
  t.teardown(() => proxy.stop());
  const warnings = proxy.logs().filter((l) => l.level === 40).map((l) => l.msg);
  t.same(warnings, [
    'BITQUERY_UPSTREM (in the environment) is not a setting and is ignored: did you mean BITQUERY_UPSTREAM? (see --help)',
    'LOG_LEVL (in the environment) is not a setting and is ignored: did you mean LOG_LEVEL? (see --help)',
    `WS_MAX_STREAM (in ${join(cwd, '.env')}) is not a setting and is ignored: did you mean WS_MAX_STREAMS? (see --help)`,
  ]);
  const check = await run(['check'], { BITQUERY_TOKEN: 't', BITQUERY_UPSTREAM: 'http://127.0.0.1:9', TOKEN_WAIT: '1' });
  t.match(check.stderr, /^bitquery-proxy: warning: TOKEN_WAIT \(in the environment\) is not a setting and is ignored: did you mean TOKEN_WAIT_MS\?/);
});

t.test('token prints only the access token; failures go to stderr', async (t) => {
  const fake = await startFake(t);
  const ok = await run(['token'], fakeEnv(fake));
  t.equal(ok.code, 0);
  t.equal(ok.stdout, `${fake.issuedTokens[0]}\n`);
  t.equal(ok.stderr, '');
  const bad = await run(['token'], { ...fakeEnv(fake), BITQUERY_CLIENT_SECRET: 'wrong-secret-9e8d' });
  t.equal(bad.code, 1);
  t.equal(bad.stdout, '');
  t.match(bad.stderr, /^bitquery-proxy token: token endpoint rejected the credentials \(HTTP 401, invalid_client.*check BITQUERY_CLIENT_ID and BITQUERY_CLIENT_SECRET/);
  t.notMatch(bad.output, 'wrong-secret-9e8d');
});

t.test('check reports each step and never prints the secret or the token', async (t) => {
  const fake = await startFake(t);
  const ok = await run(['check'], fakeEnv(fake));
  t.equal(ok.code, 0, ok.output);
  t.match(ok.stdout, /configuration  ok: client credentials for client id demo-client/);
  t.match(ok.stdout, /token          ok: expires in 17999 s/);
  t.match(ok.stdout, /upstream       ok: POST http:\/\/127\.0\.0\.1:\d+\/graphql answered 200/);
  t.match(ok.stdout, /all checks passed/);
  t.equal(fake.graphqlRequests.length, 1);
  t.notMatch(ok.output, SECRET);
  t.notMatch(ok.output, fake.issuedTokens[0]!);

  fake.graphqlScript.push({ status: 402, body: 'No active billing period' });
  const broke = await run(['check'], fakeEnv(fake));
  t.equal(broke.code, 1);
  t.match(broke.stderr, /upstream failed: .* answered 402: the account has no active billing period/);

  const down = await run(['check'], { ...fakeEnv(fake), BITQUERY_TOKEN_URL: `http://127.0.0.1:${await closedPort()}/oauth2/token` });
  t.equal(down.code, 1);
  t.match(down.stderr, /token endpoint unreachable: .*ECONNREFUSED/);
  for (const r of [broke, down]) for (const token of fake.issuedTokens) t.notMatch(r.output, token);
});

t.test('a port already in use says how to pick another, exit 2', async (t) => {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const { port } = server.address() as { port: number };
  const base = { BITQUERY_TOKEN: 't', BITQUERY_UPSTREAM: 'http://127.0.0.1:9', LOG_LEVEL: 'silent' };
  const r = await run([], { ...base, PORT: String(port), ADMIN_PORT: '0' });
  t.equal(r.code, 2);
  t.equal(r.stderr, `bitquery-proxy: port ${port} on 127.0.0.1 is in use: pick another with PORT=<port> or --port <port> (0 picks a free one)\n`);
  const admin = await run([], { ...base, PORT: '0', ADMIN_PORT: String(port) });
  t.equal(admin.code, 2);
  t.equal(admin.stderr, `bitquery-proxy: port ${port} on 127.0.0.1 is in use: pick another with ADMIN_PORT=<port> (0 picks a free one)\n`);
});
