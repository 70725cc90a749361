// Secrets mounted from files are rotated without a restart, including the way Kubernetes does it:
// the files are symlinks through `..data`, which is swapped atomically to a new folder.
import t from 'tap';
import { mkdirSync, mkdtempSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { fakeEnv, SECRET, startFake, startProxy } from '../helpers/pair.js';
import { waitFor } from '../helpers/proxy-process.js';

/** A Kubernetes-style secret volume holding `name`; `update` swaps in new content atomically. */
function secretVolume(name: string, content: string) {
  const dir = mkdtempSync(join(tmpdir(), 'bqp-volume-'));
  let version = 0;
  const writeVersion = (text: string) => {
    version += 1;
    const folder = `..2026_11_28_${version}`;
    mkdirSync(join(dir, folder));
    writeFileSync(join(dir, folder, name), text);
    symlinkSync(folder, join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  };
  writeVersion(content);
  symlinkSync(join('..data', name), join(dir, name));
  return { path: join(dir, name), update: writeVersion };
}

const post = async (url: string) => {
  const res = await request(`${url}/graphql`, { method: 'POST', body: '{"query":"{ hello }"}', headers: { 'content-type': 'application/json' } });
  await res.body.dump();
  return res.statusCode;
};

t.test('a rotated client secret file is used at once, with a new token request', async (t) => {
  const fake = await startFake(t);
  const volume = secretVolume('client-secret', `${SECRET}\n`);
  const env = { ...fakeEnv(fake), BITQUERY_CLIENT_SECRET: '', BITQUERY_CLIENT_SECRET_FILE: volume.path };
  const rotated = 'rotated-secret-0a1b2c3d';
  const proxy = await startProxy(t, fake, env, {}, [SECRET, rotated]);
  await waitFor(() => fake.tokenRequests.length === 1, 3000, 'the first token');
  t.equal(await post(proxy.url), 200);

  // The application's secret is rotated: the old one stops working at the token endpoint.
  fake.clientSecret = rotated;
  volume.update(`${rotated}\n`);
  await proxy.waitForLog((l) => /client secret changed/.test(l.msg));
  await waitFor(() => fake.tokenRequests.some((r) => r.form.client_secret === rotated), 3000, 'a token request with the new secret');
  t.equal(fake.tokenRequests.length, 2, 'exactly one new request');
  await waitFor(() => proxy.logs().filter((l) => l.msg === 'obtained a token').length === 2, 3000, 'the new token');
  t.equal(await post(proxy.url), 200);
  t.equal(fake.graphqlRequests.at(-1)!.token, fake.issuedTokens[1]);
});

t.test('a rotated static token file (symlink swap) is used at once', async (t) => {
  const fake = await startFake(t);
  const first = fake.issueToken();
  const volume = secretVolume('token', first);
  const proxy = await startProxy(t, fake, { BITQUERY_TOKEN_FILE: volume.path, BITQUERY_UPSTREAM: fake.url, LOG_LEVEL: 'trace' });
  t.equal(await post(proxy.url), 200);
  const second = fake.issueToken();
  volume.update(second);
  await proxy.waitForLog((l) => /BITQUERY_TOKEN_FILE changed/.test(l.msg));
  t.equal(await post(proxy.url), 200);
  t.equal(fake.graphqlRequests.at(-1)!.token, second);
  t.equal(fake.tokenRequests.length, 0);
});

t.test('an emptied token file keeps the token held', async (t) => {
  const fake = await startFake(t);
  const first = fake.issueToken();
  const volume = secretVolume('token', first);
  const proxy = await startProxy(t, fake, { BITQUERY_TOKEN_FILE: volume.path, BITQUERY_UPSTREAM: fake.url });
  volume.update('');
  await proxy.waitForLog((l) => /cannot use BITQUERY_TOKEN_FILE \(empty\): keeping the token held/.test(l.msg));
  t.equal(await post(proxy.url), 200);
  t.equal(fake.graphqlRequests.at(-1)!.token, first);
});
